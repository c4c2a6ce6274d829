package guard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// app is a real net/http server whose /work?ms=N holds the request N ms and does not stop
// when its client goes (as a message consumer finishing its message does not), and
// records the most requests it ever had at once. With tick=1 it streams a line every
// 50 ms meanwhile.
type app struct {
	addr              string
	inflight, maxSeen atomic.Int64
	served            atomic.Int64
}

func startApp(t *testing.T) *app {
	t.Helper()
	a := &app{}
	mux := http.NewServeMux()
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		n := a.inflight.Add(1)
		defer a.inflight.Add(-1)
		for m := a.maxSeen.Load(); n > m && !a.maxSeen.CompareAndSwap(m, n); m = a.maxSeen.Load() {
		}
		a.served.Add(1)
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
			if r.URL.Query().Get("tick") == "" {
				time.Sleep(time.Until(end))
				break
			}
			fmt.Fprintln(w, "working")
			w.(http.Flusher).Flush()
			time.Sleep(min(50*time.Millisecond, time.Until(end)))
		}
		fmt.Fprintf(w, "done %d\n", n)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	a.addr = ln.Addr().String()
	return a
}

// startGuard runs a guard until the test ends; cancel stops it, and done closes once Run
// returned (its error then in *runErr).
func startGuard(t *testing.T, cfg Config) (g *Guard, cancel context.CancelFunc, done <-chan struct{}, runErr *error) {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := make(chan struct{})
	runErr = new(error)
	go func() { defer close(d); *runErr = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-d })
	return g, cancel, d, runErr
}

// send writes one request on a new connection, as a gateway does for a hard-limited
// revision.
func send(t *testing.T, addr, target string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: app\r\n\r\n", target); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// answer reads the response on c, then closes it.
func answer(c net.Conn) (int, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// Gateways that die while their requests run on the app (closed, or reset) do not free
// their slots: the requests run to their end there, and the next ones wait for that. The
// app never sees more than the limit, and every request that waited is answered.
func TestLimitHoldsWhenClientsVanish(t *testing.T) {
	a := startApp(t)
	g, _, _, _ := startGuard(t, Config{Upstream: a.addr, Limit: 2, Timeout: 30 * time.Second})
	// They stream meanwhile: the guard's writes to the gone clients fail long before the
	// app is done.
	closed := send(t, g.Addr().String(), "/work?ms=600&tick=1")
	reset := send(t, g.Addr().String(), "/work?ms=600&tick=1")
	waitFor(t, func() bool { return a.inflight.Load() == 2 })
	vanished := time.Now()
	closed.Close()
	_ = reset.SetLinger(0)
	reset.Close()

	const n = 8
	var wg sync.WaitGroup
	var first atomic.Int64 // ns after the vanish of the first answer
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, err := answer(send(t, g.Addr().String(), "/work?ms=100")); err != nil || code != 200 {
				t.Errorf("answer: %d %v", code, err)
				return
			}
			first.CompareAndSwap(0, int64(time.Since(vanished)))
		}()
	}
	wg.Wait()
	waitIdle(t, g)
	if m := a.maxSeen.Load(); m != 2 {
		t.Fatalf("the app saw at most %d requests at once; the limit is 2", m)
	}
	// The vanished requests had about 600 ms to go; the first answer after them needs
	// those plus its own 100 ms.
	if f := time.Duration(first.Load()); f < 600*time.Millisecond {
		t.Fatalf("the first answer came %s after the two clients vanished: their slots were freed while the app still ran their requests", f)
	}
	if s := a.served.Load(); s != n+2 {
		t.Fatalf("the app served %d, want %d", s, n+2)
	}
}

func waitIdle(t *testing.T, g *Guard) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s := g.Stats(); s.Admitted > 0 || s.Queued > 0; s = g.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("guard not idle: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A request whose client gave up while it waited for a slot never reaches the app.
func TestAbandonedWhileQueuedNeverReachesApp(t *testing.T) {
	a := startApp(t)
	g, _, _, _ := startGuard(t, Config{Upstream: a.addr, Limit: 1, Timeout: 30 * time.Second})
	first := send(t, g.Addr().String(), "/work?ms=300")
	waitFor(t, func() bool { return a.inflight.Load() == 1 })
	second := send(t, g.Addr().String(), "/work?ms=0")
	waitFor(t, func() bool { return g.Stats().Queued == 1 })
	second.Close()
	if code, err := answer(first); err != nil || code != 200 {
		t.Fatalf("first: %d %v", code, err)
	}
	waitIdle(t, g)
	if s := a.served.Load(); s != 1 {
		t.Fatalf("the app served %d requests; the abandoned one must not reach it", s)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refused sends a request to addr and reports whether the connection was closed without
// a byte of an answer (the reset may come before the request is written).
func refused(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		// On loopback the reset can beat the dial's own check of the connection.
		return errors.Is(err, syscall.ECONNRESET)
	}
	if _, err := io.WriteString(c, "GET /work?ms=0 HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
		c.Close()
		return true
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	c.Close()
	return n == 0 && err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Beyond the queue, and when the app does not accept connections, a connection is closed
// unanswered (a gateway then tries another instance for an idempotent request).
func TestRefusals(t *testing.T) {
	a := startApp(t)
	g, _, _, _ := startGuard(t, Config{Upstream: a.addr, Limit: 1, MaxQueued: 1, Timeout: 30 * time.Second})
	busy := send(t, g.Addr().String(), "/work?ms=500")
	waitFor(t, func() bool { return a.inflight.Load() == 1 })
	waiting := send(t, g.Addr().String(), "/work?ms=0")
	waitFor(t, func() bool { return g.Stats().Queued == 1 })
	if !refused(g.Addr().String()) {
		t.Fatal("a connection beyond the queue was not refused")
	}
	for _, c := range []net.Conn{busy, waiting} {
		if code, err := answer(c); err != nil || code != 200 {
			t.Fatalf("answer: %d %v", code, err)
		}
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := ln.Addr().String()
	ln.Close()
	g2, _, _, _ := startGuard(t, Config{Upstream: gone, Limit: 1, Timeout: 30 * time.Second})
	if !refused(g2.Addr().String()) {
		t.Fatal("a connection to an app that refuses was not refused")
	}
	if r := g2.Stats().Refused; r != 1 {
		t.Fatalf("refused %d, want 1", r)
	}
}

// A stop lets an admitted request and a waiting one finish, and takes no new connection.
func TestDrainFinishesAdmitted(t *testing.T) {
	a := startApp(t)
	g, cancel, done, runErr := startGuard(t, Config{Upstream: a.addr, Limit: 1, Timeout: 30 * time.Second})
	admitted := send(t, g.Addr().String(), "/work?ms=300")
	waitFor(t, func() bool { return a.inflight.Load() == 1 })
	waiting := send(t, g.Addr().String(), "/work?ms=100")
	waitFor(t, func() bool { return g.Stats().Queued == 1 })
	cancel()
	waitFor(t, func() bool { // the listener closes
		c, err := net.DialTimeout("tcp", g.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	for _, c := range []net.Conn{admitted, waiting} {
		if code, err := answer(c); err != nil || code != 200 {
			t.Fatalf("answer after the stop: %d %v", code, err)
		}
	}
	select {
	case <-done:
		if *runErr != nil {
			t.Fatal(*runErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
}

// At the timeout an admitted connection is cut and its slot given to the next, as
// Knative's queue-proxy does: the limit counts requests rouse still waits for.
func TestTimeoutFreesSlot(t *testing.T) {
	a := startApp(t)
	g, _, _, _ := startGuard(t, Config{Upstream: a.addr, Limit: 1, Timeout: 400 * time.Millisecond})
	slow := send(t, g.Addr().String(), "/work?ms=3000")
	waitFor(t, func() bool { return a.inflight.Load() == 1 })
	start := time.Now()
	next := send(t, g.Addr().String(), "/work?ms=0")
	if code, err := answer(next); err != nil || code != 200 {
		t.Fatalf("next: %d %v", code, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the next request waited %s: the slot was not freed at the timeout", took)
	}
	if _, err := answer(slow); err == nil {
		t.Fatal("the slow request was answered past the timeout")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Upstream: "x:1", Limit: 1, Timeout: time.Second}, "listen address is required"},
		{Config{Listen: ":0", Limit: 1, Timeout: time.Second}, "upstream"},
		{Config{Listen: ":0", Upstream: "x:1", Timeout: time.Second}, "concurrency 0: at least 1"},
		{Config{Listen: ":0", Upstream: "x:1", Limit: 1}, "timeout 0s"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error with %q", c.cfg, err, c.want)
		}
	}
}
