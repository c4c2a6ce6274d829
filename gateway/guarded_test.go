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

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/guard"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// connCounter is an HTTP/1.1 and h2c instance that counts the connections it was given
// and the requests it had in flight at once.
type connCounter struct {
	ln                        net.Listener
	conns, closed             atomic.Int64
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
		switch s {
		case http.StateNew:
			c.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			c.closed.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
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
		gd, err := guard.New(guard.Config{Listen: "127.0.0.1:0", Upstream: b.ln.Addr().String(), H2C: protocol != "", Limit: 1, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = gd.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
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
