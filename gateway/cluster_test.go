package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// One Consul + Nomad pair for the package's integration tests.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(testcluster.Run(m, testcluster.Options{}, &cluster))
}

const ns = "default"

func ptr[T any](v T) *T { return &v }

// revision describes a revision job the tests run on Nomad: the testbackend binary.
type revision struct {
	svc, name string
	count     int
	env       map[string]string
	cfg       func(*revmeta.Config)
	noMeta    bool // register without the readiness-path service meta
}

// deploy registers the revision's config in KV and its job in Nomad. It does not wait.
func deploy(t testing.TB, r revision) revmeta.Config {
	t.Helper()
	bin, err := cluster.GoBuild("./gateway/internal/testbackend")
	if err != nil {
		t.Fatal(err)
	}
	cfg := revmeta.Defaults(ns, r.svc, r.name)
	cfg.Timeout = 30 * time.Second
	if r.cfg != nil {
		r.cfg(&cfg)
	}
	if err := store.New(cluster.Consul).PutRevision(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PORT": "${NOMAD_PORT_http}", "ROUSE_REVISION": r.name}
	for k, v := range r.env {
		env[k] = v
	}
	meta := map[string]string{revmeta.MetaReadinessPath: "/healthz"}
	if r.noMeta {
		meta = nil
	}
	job := &nomadapi.Job{
		ID: ptr(r.name), Name: ptr(r.name), Type: ptr(nomadapi.JobTypeService),
		Datacenters: []string{"*"}, Meta: cfg.Meta(),
		TaskGroups: []*nomadapi.TaskGroup{{
			Name:          ptr(revmeta.Group),
			Count:         ptr(r.count),
			Update:        &nomadapi.UpdateStrategy{MaxParallel: ptr(0)},
			ShutdownDelay: ptr(3 * time.Second),
			Networks:      []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: revmeta.PortLabel}}}},
			Services: []*nomadapi.Service{{
				Name: r.name, Provider: "consul", PortLabel: revmeta.PortLabel,
				Tags: []string{revmeta.TagRouse, revmeta.TagServicePrefix + r.svc},
				Meta: meta,
				Checks: []nomadapi.ServiceCheck{{Name: "readiness", Type: "http", Path: "/healthz",
					Interval: time.Second, Timeout: time.Second}},
			}},
			Tasks: []*nomadapi.Task{{
				Name: revmeta.Task, Driver: "raw_exec",
				Config:      map[string]any{"command": bin},
				Env:         env,
				Resources:   &nomadapi.Resources{CPU: ptr(50), MemoryMB: ptr(32)},
				KillTimeout: ptr(10 * time.Second),
			}},
		}},
	}
	if _, _, err := cluster.Nomad.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register %s: %v", r.name, err)
	}
	return cfg
}

func scale(t testing.TB, job string, n int) {
	t.Helper()
	if _, _, err := cluster.Nomad.Jobs().Scale(job, revmeta.Group, ptr(n), "test", false, nil, nil); err != nil {
		t.Fatalf("scale %s to %d: %v", job, n, err)
	}
}

// setRoute writes a service record whose resolved route is targets.
func setRoute(t testing.TB, svc string, targets ...store.RouteTarget) {
	t.Helper()
	_, err := store.New(cluster.Consul).UpdateService(context.Background(), ns, svc, func(cur *store.Service) (*store.Service, error) {
		if cur == nil {
			cur = &store.Service{}
		}
		cur.Route = targets
		cur.UpdatedAt = time.Now()
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startGateway runs an in-process gateway on free loopback ports until the test ends.
func startGateway(t testing.TB, mod func(*gateway.Config)) *gateway.Gateway {
	t.Helper()
	cfg := gateway.Config{
		PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Consul: cluster.Consul,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), AccessLog: zap.NewNop(),
		ActivationTimeout: 30 * time.Second, DrainTimeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("gateway did not stop")
		}
	})
	return g
}

// client talks to a gateway's public listener whatever the URL's host, keeping the host
// as the Host header.
func client(g *gateway.Gateway, conns int) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, g.PublicAddr())
			},
			MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type answer struct {
	status int
	header http.Header
	body   string
	took   time.Duration
	err    error
}

func get(c *http.Client, host, path string) answer {
	start := time.Now()
	resp, err := c.Get("http://" + host + path)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b), took: time.Since(start), err: err}
}

// parallel runs n calls of f with at most conc at once and returns their answers in order.
func parallel(n, conc int, f func(i int) answer) []answer {
	out := make([]answer, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = f(i)
		}()
	}
	wg.Wait()
	return out
}

// adminGet reads an admin endpoint.
func adminGet(t testing.TB, g *gateway.Gateway, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// gaugeOf returns the gateway's gauges for a revision.
func gaugeOf(t testing.TB, g *gateway.Gateway, rev string) gauges.Revision {
	t.Helper()
	rep, err := gauges.Read(strings.NewReader(adminGet(t, g, "/gauges")))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Revisions {
		if r.Revision == rev {
			return r
		}
	}
	return gauges.Revision{Namespace: ns, Revision: rev, Ready: -1}
}

// waitReady waits until the gateway routes to n instances of rev.
func waitReady(t testing.TB, g *gateway.Gateway, rev string, n int) {
	t.Helper()
	poll.Until(t, 90*time.Second, "the gateway routing to the instances", func() error {
		if got := gaugeOf(t, g, rev).Ready; got != int64(n) {
			return fmt.Errorf("%s: gateway routes to %d instances, want %d\n%s", rev, got, n, adminGet(t, g, "/routes"))
		}
		return nil
	})
}

func host(svc string) string { return svc + "." + ns + ".localhost" }

// shared is a pair of always-on revisions of service "shared" most routing tests use.
var sharedOnce sync.Once

func sharedRevisions(t *testing.T) {
	t.Helper()
	sharedOnce.Do(func() {
		deploy(t, revision{svc: "shared", name: "shared-00001", count: 1})
		deploy(t, revision{svc: "shared", name: "shared-00002", count: 1})
		cluster.WaitPassing(t, "shared-00001", 1)
		cluster.WaitPassing(t, "shared-00002", 1)
	})
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
