// Package control is rouse's control plane: it applies service specs as immutable
// revisions (Nomad jobs), keeps each service's record and route in Consul KV with
// check-and-set, and reads them back for list/describe. It prints nothing: callers get
// data, typed errors and progress events, and decide how to show them.
package control

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// DefaultKeep is how many revisions without traffic GC keeps per service.
const DefaultKeep = 10

// DefaultWait is how long apply waits for a new revision to become ready.
const DefaultWait = 2 * time.Minute

// Config wires a Client to one Nomad and one Consul.
type Config struct {
	Nomad  *nomadapi.Client
	Consul *consulapi.Client
	// Addresses and whether a token is set only shape error messages.
	NomadAddr, ConsulAddr   string
	NomadToken, ConsulToken bool
	// Domain is the public domain: URLs are http://<svc>.<ns>.<domain>. It may carry a
	// port ("localhost:8080").
	Domain string
	// InternalDomain is the gateways' internal domain: an internal service's URL is
	// http://<svc>.<ns>.<internal domain> (default "internal"; it may carry a port).
	InternalDomain string
	// Now is the clock (time stamps in records, wait deadlines); nil = time.Now.
	Now func() time.Time
	// GatewayWait bounds how long a route change waits for every gateway to serve it:
	// 0 = DefaultGatewayWait, negative = do not wait.
	GatewayWait time.Duration
}

// Client runs control-plane operations. It is safe for concurrent use.
type Client struct {
	nomad                   *nomadapi.Client
	consul                  *consulapi.Client
	store                   *store.Store
	nomadAddr, consulAddr   string
	nomadToken, consulToken bool
	domain, internalDomain  string
	probe                   *http.Client
	registry                http.RoundTripper // to image registries, for tag resolution
	poll                    time.Duration
	now                     func() time.Time
	gatewayWait             time.Duration
}

// New returns a Client.
func New(cfg Config) *Client {
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.InternalDomain == "" {
		cfg.InternalDomain = "internal"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GatewayWait == 0 {
		cfg.GatewayWait = DefaultGatewayWait
	}
	return &Client{
		nomad: cfg.Nomad, consul: cfg.Consul, store: store.New(cfg.Consul),
		nomadAddr: cfg.NomadAddr, consulAddr: cfg.ConsulAddr,
		nomadToken: cfg.NomadToken, consulToken: cfg.ConsulToken,
		domain: cfg.Domain, internalDomain: cfg.InternalDomain,
		// Readiness probes go straight to an instance: short timeout, no pooled
		// connections to processes that may be gone a second later.
		probe: &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		registry:    newRegistryTransport(),
		poll:        200 * time.Millisecond,
		now:         cfg.Now,
		gatewayWait: cfg.GatewayWait,
	}
}

// URL is a service's public URL.
func (c *Client) URL(ns, svc string) string { return "http://" + svc + "." + ns + "." + c.domain }

// TagURL is the URL that reaches a tagged revision directly.
func (c *Client) TagURL(ns, svc, tag string) string {
	return "http://" + tag + "-" + svc + "." + ns + "." + c.domain
}

// InternalURL is a service's URL under the gateways' internal domain, served on their
// internal listener: the only one of an internal service.
func (c *Client) InternalURL(ns, svc string) string {
	return "http://" + svc + "." + ns + "." + c.internalDomain
}

// urlOf is the URL a service is reached at: under the internal domain when it is
// internal.
func (c *Client) urlOf(ns, svc string, internal bool) string {
	if internal {
		return c.InternalURL(ns, svc)
	}
	return c.URL(ns, svc)
}

// tagURLOf is TagURL, under the internal domain when the service is internal.
func (c *Client) tagURLOf(ns, svc, tag string, internal bool) string {
	if internal {
		return "http://" + tag + "-" + svc + "." + ns + "." + c.internalDomain
	}
	return c.TagURL(ns, svc, tag)
}

// Stage is a step of a long operation.
type Stage string

// Stages, in the order apply goes through them.
const (
	StageResolve Stage = "resolve" // "Resolving image 127.0.0.1:5000/hi:1"
	StageCreate  Stage = "create"  // "Creating revision hello-00003"
	StageWait    Stage = "wait"    // "Waiting for instance"
	StageStatus  Stage = "status"  // a detail of the current step; each replaces the previous one
	StageRoute   Stage = "route"   // "Routing traffic"
	StageClean   Stage = "clean"   // revision GC, deletes
	StageDone    Stage = "done"
)

// Event is one progress report.
type Event struct {
	Stage    Stage  `json:"stage"`
	Revision string `json:"revision,omitempty"`
	Message  string `json:"message"`
}

// emit calls fn when set, so operations can report unconditionally.
func emit(fn func(Event), stage Stage, rev, format string, args ...any) {
	if fn != nil {
		fn(Event{Stage: stage, Revision: rev, Message: fmt.Sprintf(format, args...)})
	}
}

// revJob is what the control plane needs to know about a revision's Nomad job.
type revJob struct {
	Name       string
	Generation int
	SpecHash   string
	Image      string // as the spec wrote it ("" for a command)
	Digest     string // the digest it runs ("" when it follows its tag)
	Stopped    bool   // stopped jobs are revisions that failed (or were stopped by hand)
	Status     string
	Created    time.Time
	// Knative's scale-down-delay and activation-scale, from job meta (written only when set).
	ScaleDownDelay  time.Duration
	ActivationScale int
}

func (c *Client) qo(ctx context.Context, ns string) *nomadapi.QueryOptions {
	return (&nomadapi.QueryOptions{Namespace: ns}).WithContext(ctx)
}

func (c *Client) wo(ctx context.Context, ns string) *nomadapi.WriteOptions {
	return (&nomadapi.WriteOptions{Namespace: ns}).WithContext(ctx)
}

// revisionJobs lists the service's revision jobs in ns by name ("" = every service's).
func (c *Client) revisionJobs(ctx context.Context, ns, svc string) (map[string]*revJob, error) {
	q := c.qo(ctx, ns)
	if svc != "" {
		q.Filter = fmt.Sprintf(`Meta[%q] == %q`, revmeta.KeyService, svc)
	} else {
		q.Filter = fmt.Sprintf(`Meta[%q] is not empty`, revmeta.KeyService)
	}
	stubs, _, err := c.nomad.Jobs().ListOptions(&nomadapi.JobListOptions{Fields: &nomadapi.JobListFields{Meta: true}}, q)
	if err != nil {
		return nil, c.nomadErr(err, "list-jobs", ns)
	}
	out := map[string]*revJob{}
	for _, s := range stubs {
		if !revmeta.IsRevision(s.Meta) || (svc != "" && s.Meta[revmeta.KeyService] != svc) {
			continue
		}
		gen, _ := strconv.Atoi(s.Meta[revmeta.KeyGeneration])
		created, err := time.Parse(time.RFC3339, s.Meta[revmeta.KeyCreated])
		if err != nil { // a revision registered before rouse stamped it
			created = time.Unix(0, s.SubmitTime)
		}
		out[s.ID] = &revJob{
			Name: s.ID, Generation: gen, SpecHash: s.Meta[revmeta.KeySpecHash],
			Image: s.Meta[revmeta.KeyImage], Digest: s.Meta[revmeta.KeyImageDigest],
			Stopped: s.Stop, Status: s.Status, Created: created,
		}
		out[s.ID].ScaleDownDelay, _ = time.ParseDuration(s.Meta[revmeta.KeyScaleDownDelay])
		out[s.ID].ActivationScale, _ = strconv.Atoi(s.Meta[revmeta.KeyActivationScale])
	}
	return out, nil
}

// byGeneration returns the jobs newest first.
func byGeneration(jobs map[string]*revJob) []*revJob {
	out := make([]*revJob, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Generation != out[j].Generation {
			return out[i].Generation > out[j].Generation
		}
		return out[i].Name > out[j].Name
	})
	return out
}

// generations resolves revision names to generations, preferring the jobs listed and
// falling back to the KV configs (a revision's generation never changes, so the memo is
// safe across the retries of a CAS loop).
type generations struct {
	c    *Client
	ctx  context.Context
	ns   string
	memo map[string]int
}

func (c *Client) generations(ctx context.Context, ns string, jobs map[string]*revJob) *generations {
	g := &generations{c: c, ctx: ctx, ns: ns, memo: map[string]int{}}
	for n, j := range jobs {
		g.memo[n] = j.Generation
	}
	return g
}

func (g *generations) of(rev string) (int, error) {
	if rev == "" {
		return 0, nil
	}
	if n, ok := g.memo[rev]; ok {
		return n, nil
	}
	cfg, err := g.c.store.GetRevision(g.ctx, g.ns, rev)
	if err != nil {
		return 0, g.c.consulErr(err, "key:read", store.RevisionKey(g.ns, rev))
	}
	n := 0
	if cfg != nil {
		n = cfg.Generation
	}
	g.memo[rev] = n
	return n, nil
}

func (c *Client) getService(ctx context.Context, ns, svc string) (*store.Service, error) {
	rec, err := c.store.GetService(ctx, ns, svc)
	return rec, c.consulErr(err, "key:read", store.ServiceKey(ns, svc))
}

func (c *Client) updateService(ctx context.Context, ns, svc string, fn func(*store.Service) (*store.Service, error)) (*store.Service, error) {
	// The store returns fn's error as is, and stops at the first one: remember it so that
	// our own validation errors are not dressed up as Consul errors.
	var fnErr error
	rec, err := c.store.UpdateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
		next, err := fn(cur)
		fnErr = err
		return next, err
	})
	if fnErr != nil {
		return nil, fnErr
	}
	return rec, c.consulErr(err, "key:write", store.ServiceKey(ns, svc))
}
