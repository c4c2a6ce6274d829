package watch

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// stateFilter selects the checks of rouse services plus the node-level checks that make
// every service on a node unhealthy.
const stateFilter = `ServiceTags contains "` + revmeta.TagRouse + `" or CheckID == "serfHealth" or CheckID == "_node_maintenance"`

// fetchParallel bounds the catalog reads after a change (many at startup).
const fetchParallel = 8

// Endpoint is one registered instance of a revision.
type Endpoint struct {
	ID     string // "<node>/<service id>", stable for the instance's life
	Addr   string // host:port
	Status string // consulapi.HealthPassing, HealthWarning or HealthCritical (worst of its and its node's checks)
	// ProbePath is the request URI of its HTTP readiness check ("" when unknown: a TCP
	// connect), or ProbeGRPC when its readiness is the gRPC health check.
	ProbePath string
	Namespace string // from a rouse.namespace= tag; "" when absent
}

// Service is the instances of one Consul service (one revision). A Service value is
// immutable: the pointer in EndpointsState changes exactly when its content changes.
type Service struct {
	Name      string
	Endpoints []Endpoint // sorted by ID
}

// EndpointsState is every rouse service with at least one instance.
type EndpointsState struct {
	Index    uint64
	Services map[string]*Service
}

type instKey struct{ node, serviceID string }

// Endpoints follows the instances of every rouse revision.
type Endpoints struct {
	consul *consulapi.Client
	log    *zap.Logger
	clock  clock.Clock
	errs   func()

	addrs   map[instKey]catalogInfo // what the catalog said of instances seen; owned by Run's goroutine
	latest  atomic.Pointer[EndpointsState]
	changed signal
	fetches atomic.Int64
}

// NewEndpoints returns an endpoints watcher; onError (may be nil) counts failed queries.
func NewEndpoints(c *consulapi.Client, log *zap.Logger, clk clock.Clock, onError func()) *Endpoints {
	return &Endpoints{consul: c, log: log, clock: clk, errs: onError, addrs: map[instKey]catalogInfo{}, changed: newSignal()}
}

// Changed signals that Latest has a new value.
func (w *Endpoints) Changed() <-chan struct{} { return w.changed }

// Latest is the newest state, nil before the first answer.
func (w *Endpoints) Latest() *EndpointsState { return w.latest.Load() }

// CatalogFetches counts the address reads made so far (for tests and metrics).
func (w *Endpoints) CatalogFetches() int64 { return w.fetches.Load() }

// Run watches until ctx is done.
func (w *Endpoints) Run(ctx context.Context) {
	loop(ctx, "endpoints", w.log, w.clock, w.errs, func(ctx context.Context, idx uint64) (uint64, error) {
		checks, meta, err := w.consul.Health().State(consulapi.HealthAny, (&consulapi.QueryOptions{WaitIndex: idx, WaitTime: waitTime, Filter: stateFilter}).WithContext(ctx))
		if err != nil {
			return 0, err
		}
		prev := w.latest.Load()
		if prev != nil && meta.LastIndex == prev.Index {
			return meta.LastIndex, nil
		}
		insts := groupChecks(checks)
		if err := w.fillAddresses(ctx, insts); err != nil {
			return 0, err
		}
		next := &EndpointsState{Index: meta.LastIndex, Services: build(insts, w.addrs, prev)}
		w.latest.Store(next)
		if prev == nil || !sameServices(prev.Services, next.Services) {
			w.changed.notify()
		}
		return meta.LastIndex, nil
	})
}

type instance struct {
	name, status, probe, ns string
}

type catalogInfo struct{ addr, probe string }

// ProbeGRPC is Endpoint.ProbePath for an instance whose readiness is the standard gRPC
// health check (grpc.health.v1.Health/Check of the server, over h2c). Not a request URI:
// it has no leading slash.
const ProbeGRPC = "grpc.health.v1.Health/Check"

// probeOf is what a service's own meta says to probe it with ("" when it says nothing).
func probeOf(meta map[string]string) string {
	if meta[revmeta.MetaReadinessGRPC] == "true" {
		return ProbeGRPC
	}
	return meta[revmeta.MetaReadinessPath]
}

// rank orders statuses; anything unknown (e.g. "maintenance") counts as critical.
func rank(s string) int {
	switch s {
	case consulapi.HealthPassing:
		return 0
	case consulapi.HealthWarning:
		return 1
	}
	return 2
}

func worst(a, b string) string {
	r := max(rank(a), rank(b))
	return [...]string{consulapi.HealthPassing, consulapi.HealthWarning, consulapi.HealthCritical}[r]
}

// groupChecks folds checks into instances: an instance's status is the worst of its own
// checks and of its node's checks.
func groupChecks(checks consulapi.HealthChecks) map[instKey]*instance {
	nodeStatus := map[string]string{}
	insts := map[instKey]*instance{}
	for _, c := range checks {
		if c.ServiceID == "" {
			nodeStatus[c.Node] = worst(orPassing(nodeStatus[c.Node]), c.Status)
			continue
		}
		if !slices.Contains(c.ServiceTags, revmeta.TagRouse) {
			continue
		}
		k := instKey{c.Node, c.ServiceID}
		in := insts[k]
		if in == nil {
			in = &instance{name: c.ServiceName, status: consulapi.HealthPassing}
			for _, t := range c.ServiceTags {
				if ns, ok := strings.CutPrefix(t, revmeta.TagNamespacePrefix); ok {
					in.ns = ns
				}
			}
			insts[k] = in
		}
		in.status = worst(in.status, c.Status)
		if in.probe == "" {
			in.probe = checkPath(c)
		}
	}
	for k, in := range insts {
		if s, ok := nodeStatus[k.node]; ok {
			in.status = worst(in.status, s)
		}
	}
	return insts
}

// checkPath finds the request URI an HTTP check probes: from its definition when Consul
// returns it, else from the output of its last run ("HTTP GET http://…/healthz: …").
func checkPath(c *consulapi.HealthCheck) string {
	if c.Definition.GRPC != "" {
		return ProbeGRPC
	}
	raw := c.Definition.HTTP
	if raw == "" {
		rest, ok := strings.CutPrefix(c.Output, "HTTP GET ")
		if !ok {
			return ""
		}
		raw, _, _ = strings.Cut(rest, ": ")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.RequestURI()
}

func orPassing(s string) string {
	if s == "" {
		return consulapi.HealthPassing
	}
	return s
}

// fillAddresses learns the address of every instance it has not seen yet, with as few
// requests as it can: one catalog read per service that gained instances, or — when that
// would be more requests, as at startup with thousands of revisions on a few nodes — one
// read per node. It also forgets instances that are gone.
func (w *Endpoints) fillAddresses(ctx context.Context, insts map[instKey]*instance) error {
	services, nodes := map[string]bool{}, map[string]bool{}
	for k, in := range insts {
		if _, ok := w.addrs[k]; !ok {
			services[in.name] = true
			nodes[k.node] = true
		}
	}
	for k := range w.addrs {
		if _, ok := insts[k]; !ok {
			delete(w.addrs, k)
		}
	}
	if len(services) == 0 {
		return nil
	}
	byNode := len(nodes) < len(services)
	keys := services
	if byNode {
		keys = nodes
	}
	work := make(chan string, len(keys))
	for k := range keys {
		work <- k
	}
	close(work)
	type found struct {
		k    instKey
		info catalogInfo
	}
	var (
		mu       sync.Mutex
		results  []found
		firstErr error
		wg       sync.WaitGroup
	)
	add := func(node, serviceID, host, nodeAddr string, port int, meta map[string]string) {
		if host == "" {
			host = nodeAddr
		}
		results = append(results, found{instKey{node, serviceID}, catalogInfo{addr: net.JoinHostPort(host, strconv.Itoa(port)), probe: probeOf(meta)}})
	}
	for range min(fetchParallel, len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range work {
				w.fetches.Add(1)
				q := (&consulapi.QueryOptions{}).WithContext(ctx)
				if byNode {
					list, _, err := w.consul.Catalog().NodeServiceList(key, q)
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = fmt.Errorf("catalog node %s: %w", key, err)
					}
					if err == nil && list != nil && list.Node != nil {
						for _, s := range list.Services {
							add(key, s.ID, s.Address, list.Node.Address, s.Port, s.Meta)
						}
					}
					mu.Unlock()
					continue
				}
				entries, _, err := w.consul.Catalog().Service(key, "", q)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("catalog service %s: %w", key, err)
				}
				for _, e := range entries {
					add(e.Node, e.ServiceID, e.ServiceAddress, e.Address, e.ServicePort, e.ServiceMeta)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, r := range results {
		if _, ok := insts[r.k]; ok {
			w.addrs[r.k] = r.info
		}
	}
	return firstErr
}

// build makes the per-service lists, reusing prev's *Service where nothing changed.
// Instances whose address is still unknown (deregistered between the two reads) are left
// out; the next change brings them back if they exist.
func build(insts map[instKey]*instance, addrs map[instKey]catalogInfo, prev *EndpointsState) map[string]*Service {
	lists := map[string][]Endpoint{}
	for k, in := range insts {
		ci, ok := addrs[k]
		if !ok {
			continue
		}
		probe := ci.probe // the service's own statement wins over what a check run showed
		if probe == "" {
			probe = in.probe
		}
		lists[in.name] = append(lists[in.name], Endpoint{ID: k.node + "/" + k.serviceID, Addr: ci.addr, Status: in.status, ProbePath: probe, Namespace: in.ns})
	}
	out := make(map[string]*Service, len(lists))
	for name, eps := range lists {
		sort.Slice(eps, func(i, j int) bool { return eps[i].ID < eps[j].ID })
		if prev != nil {
			if old, ok := prev.Services[name]; ok && slices.Equal(old.Endpoints, eps) {
				out[name] = old
				continue
			}
		}
		out[name] = &Service{Name: name, Endpoints: eps}
	}
	return out
}

func sameServices(a, b map[string]*Service) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
