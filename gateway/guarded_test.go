package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/guard"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// connCounter is an HTTP/1.1 and h2c instance that counts the connections it was given
// and the requests it had in flight at once.
type connCounter struct {
	ln                        net.Listener
	conns                     atomic.Int64
	inFlight, maxIn, requests atomic.Int64
}

func newConnCounter(t testing.TB, sleep time.Duration) *connCounter {
	t.Helper()
	c := &connCounter{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.ln = ln
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		n := c.inFlight.Add(1)
		defer c.inFlight.Add(-1)
		for m := c.maxIn.Load(); n > m && !c.maxIn.CompareAndSwap(m, n); m = c.maxIn.Load() {
		}
		c.requests.Add(1)
		time.Sleep(sleep)
		fmt.Fprint(w, "ok")
	}), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

// runGuard runs a rouse guard with cfg on a free loopback port until the test ends.
func runGuard(tb testing.TB, cfg guard.Config) *guard.Guard {
	tb.Helper()
	cfg.Listen = "127.0.0.1:0"
	gd, err := guard.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = gd.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	return gd
}

// h1Sequential sends n requests one after another on one kept-alive HTTP/1.1 connection to g.
func h1Sequential(t *testing.T, g *gateway.Gateway, svc string, n int) {
	t.Helper()
	c, err := net.Dial("tcp", g.PublicAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for range n {
		fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\n\r\n", host(svc))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("status %d, close %v: the client's connection must stay open", resp.StatusCode, resp.Close)
		}
	}
}

// h2Sequential sends n requests one after another as streams of one HTTP/2 connection to g.
func h2Sequential(t *testing.T, g *gateway.Gateway, svc string, n int) {
	t.Helper()
	cl := h2Client(g, nil)
	defer cl.CloseIdleConnections()
	for range n {
		resp, err := cl.Get("http://" + host(svc) + "/x")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// A revision with a hard limit sits behind rouse's guard (jobspec adds it). Through a real
// guard of concurrency 1, the instance never has two requests at once, with clients on
// kept-alive HTTP/1.1 and HTTP/2 connections, to an HTTP/1.1 and an h2c instance: 8
// requests of 100 ms take 0.8 s and a little, and the guard keeps its connections to the
// instance alive.
func TestGuardedRevisionThroughGuard(t *testing.T) {
	for _, protocol := range []string{"", revmeta.ProtocolH2C} {
		b := newConnCounter(t, 100*time.Millisecond)
		gd := runGuard(t, guard.Config{Upstream: b.ln.Addr().String(), H2C: protocol != "", Limit: 1, Timeout: 10 * time.Second})
		svc := "through-guard-h1"
		if protocol != "" {
			svc = "through-guard-h2c"
		}
		// The gateway's share is the whole limit (one gateway): the guard is what a second
		// gateway would meet. A second client path (HTTP/2) runs beside the HTTP/1.1 one.
		g := routePorts(t, svc, func(c *revmeta.Config) { c.Protocol, c.Concurrency = protocol, 1 }, nil, gd.Addr().(*net.TCPAddr).Port)
		start := time.Now()
		var wg sync.WaitGroup
		wg.Go(func() { h1Sequential(t, g, svc, 4) })
		wg.Go(func() { h2Sequential(t, g, svc, 4) })
		wg.Wait()
		took := time.Since(start)
		if m := b.maxIn.Load(); m != 1 {
			t.Fatalf("%q: the instance had %d requests at once behind a guard of 1", protocol, m)
		}
		if b.requests.Load() != 8 || took < 800*time.Millisecond || took > 5*time.Second {
			t.Fatalf("%q: %d requests in %s; want 8 in 0.8 s and a little", protocol, b.requests.Load(), took)
		}
		if c := b.conns.Load(); c > 2 { // the readiness probe's and the guard's one
			t.Fatalf("%q: the instance got %d connections for 8 requests", protocol, c)
		}
	}
}

// Behind a guard, an instance's port accepts connections before its app does, so for a
// revision with a hard limit and a TCP readiness check (no path to ask) the gateway's own
// probe does not make a starting instance routable: Consul's check, which goes to the app
// itself, does. A held request reaches the instance only once that check passes.
func TestGuardedTCPReadinessWaitsForConsul(t *testing.T) {
	const svc, rev = "guarded-tcp", "guarded-tcp-00001"
	b := newConnCounter(t, 0)
	cfg := revmeta.Defaults(ns, svc, rev)
	cfg.Timeout, cfg.Concurrency = 20*time.Second, 1
	// Registered with no readiness path, and not passing yet.
	g, check := routeCandidate(t, cfg, b.ln.Addr().(*net.TCPAddr).Port, nil)

	start := time.Now()
	done := make(chan answer, 1)
	go func() { done <- get(client(g, 1), host(svc), "/") }()
	time.Sleep(1500 * time.Millisecond) // the gateway probes a candidate within milliseconds
	if n := b.requests.Load(); n != 0 {
		t.Fatalf("the instance got %d requests before its Consul check passed", n)
	}
	if err := cluster.Consul.Agent().UpdateTTL(check, "", consulapi.HealthPassing); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil || a.status != 200 || b.requests.Load() != 1 {
		t.Fatalf("held request: %d %v; the instance got %d", a.status, a.err, b.requests.Load())
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("answered in %s, before the check passed", took)
	}
}
