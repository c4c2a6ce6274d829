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

	"github.com/gorilla/websocket"
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
	a.addr = serve(t, &http.Server{Handler: mux})
	return a
}

// serve runs srv on a free loopback port until the test ends and returns its address.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
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

// Beyond the queue a request gets 503; when the app does not accept connections, the
// exchange ends without an answer (a gateway then tries another instance for an
// idempotent request, as for an app that refused it).
func TestRefusals(t *testing.T) {
	a := startApp(t)
	g, _, _, _ := startGuard(t, Config{Upstream: a.addr, Limit: 1, MaxQueued: 1, Timeout: 30 * time.Second})
	busy := send(t, g.Addr().String(), "/work?ms=500")
	waitFor(t, func() bool { return a.inflight.Load() == 1 })
	waiting := send(t, g.Addr().String(), "/work?ms=0")
	waitFor(t, func() bool { return g.Stats().Queued == 1 })
	if code, err := answer(send(t, g.Addr().String(), "/work?ms=0")); err != nil || code != 503 {
		t.Fatalf("a request beyond the queue: %d %v, want 503", code, err)
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
	if r := g2.Stats().Refused; r < 1 {
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

// At the timeout an admitted request is cut (504) and its slot given to the next, as
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
	if code, err := answer(slow); err != nil || code != 504 {
		t.Fatalf("the slow request: %d %v, want the guard's 504 at the timeout", code, err)
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

// recorder is a net/http app that records every request it gets as "METHOD URI body".
type recorder struct {
	addr string
	mu   sync.Mutex
	got  []string
	// conns counts the connections it was given.
	conns atomic.Int64
}

func startRecorder(t *testing.T, h2c bool) *recorder {
	t.Helper()
	rec := &recorder{}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(h2c)
	srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		line := fmt.Sprintf("%s %s %q", r.Method, r.RequestURI, b)
		if err != nil {
			line += " (body unreadable)"
		}
		rec.mu.Lock()
		rec.got = append(rec.got, line)
		rec.mu.Unlock()
		w.Header().Set("Trailer", "X-Sum")
		fmt.Fprintf(w, "%s %d", r.Proto, len(b))
		w.Header().Set("X-Sum", strconv.Itoa(len(b)))
	}), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rec.conns.Add(1)
		}
	}}
	rec.addr = serve(t, srv)
	return rec
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// rawExchange writes b on a new connection to addr and reads what comes back for a
// second. (No half-close: net/http takes the end of a client's input for the client gone,
// and so does the guard, which then drops what that client still waits for.)
func rawExchange(t *testing.T, addr string, b string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, b)
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	out, _ := io.ReadAll(c)
	return string(out)
}

// Hostile bytes sent straight to the guard's port reach the app as exactly the requests
// Go's net/http server — the reference — reads from the same bytes, and nothing else: the
// app gets them as net/http writes them, so the guard and the app cannot read one stream
// two ways. (A request whose body breaks off reaches the app broken off, or not at all.)
func TestHostileBytesJudgedByNetHTTP(t *testing.T) {
	for _, in := range []string{
		// Content-Length and Transfer-Encoding together (the classic desync).
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		// Two different lengths.
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		// A chunk size that is no number, and one with a trailing space.
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		// Transfer-Encoding other than chunked last.
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		// Obsolete line folding, bare LF, a space before the colon.
		"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
		"GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\nHost: x\n\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
		// Pipelined, the last one cut short.
		"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokPOST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nshort",
		// No Host, an absolute-form target, a header too large.
		"GET /a HTTP/1.1\r\n\r\n",
		"GET http://other/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 1<<20+10) + "\r\n\r\n",
	} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			judge(t, in)
		})
	}
}

// judge sends in to net/http and to the guard and compares what reached the apps.
func judge(t *testing.T, in string) {
	{
		ref := startRecorder(t, false)
		rawExchange(t, ref.addr, in)
		app := startRecorder(t, false)
		g, _, _, _ := startGuard(t, Config{Upstream: app.addr, Limit: 2, Timeout: 10 * time.Second})
		rawExchange(t, g.Addr().String(), in)
		var want []string
		for _, r := range ref.requests() {
			if !strings.HasSuffix(r, "(body unreadable)") {
				// The guard sends an absolute-form target on in origin form.
				want = append(want, strings.Replace(r, "http://other/abs?q=1", "/abs?q=1", 1))
			}
		}
		var got []string // one whose body broke off may or may not have started at the app
		for _, r := range app.requests() {
			if !strings.HasSuffix(r, "(body unreadable)") {
				got = append(got, r)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("input %.60q:\nnet/http read %v\nthe app got   %v", in, want, got)
		}
	}
}

// Many requests over kept-alive connections reuse the guard's connections to the app (at
// most one per slot); trailers pass; an h2c app is reached over h2c.
func TestKeepAliveTrailersAndH2C(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		app := startRecorder(t, h2c)
		g, _, _, _ := startGuard(t, Config{Upstream: app.addr, H2C: h2c, Limit: 2, Timeout: 10 * time.Second})
		var p http.Protocols
		if h2c {
			p.SetUnencryptedHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		cl := &http.Client{Transport: &http.Transport{Protocols: &p}}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 10 {
					resp, err := cl.Post("http://"+g.Addr().String()+"/t", "text/plain", strings.NewReader("12345"))
					if err != nil {
						t.Error(err)
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					wantProto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2c]
					if resp.StatusCode != 200 || string(b) != wantProto+" 5" || resp.Trailer.Get("X-Sum") != "5" {
						t.Errorf("h2c=%v: %d %q trailer %q", h2c, resp.StatusCode, b, resp.Trailer.Get("X-Sum"))
						return
					}
				}
			})
		}
		wg.Wait()
		if n := len(app.requests()); n != 40 {
			t.Errorf("h2c=%v: the app got %d requests, want 40", h2c, n)
		}
		if c := app.conns.Load(); c > 2 {
			t.Errorf("h2c=%v: the app got %d connections for 40 requests at 2 slots; want at most 2", h2c, c)
		}
	}
}

// A WebSocket passes through and holds its slot while it is open: with one slot, a
// second one waits until the first closes.
func TestWebSocketHoldsItsSlot(t *testing.T) {
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, b); err != nil {
				return
			}
		}
	})
	g, _, _, _ := startGuard(t, Config{Upstream: serve(t, &http.Server{Handler: mux}), Limit: 1, Timeout: 10 * time.Second})
	url := "ws://" + g.Addr().String() + "/ws"
	first, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	echo := func(c *websocket.Conn, msg string) {
		t.Helper()
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.ReadMessage(); err != nil || string(b) != msg {
			t.Fatalf("echo %q: %q %v", msg, b, err)
		}
	}
	echo(first, "one")
	second := make(chan *websocket.Conn, 1)
	go func() {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Error(err)
			close(second)
			return
		}
		second <- c
	}()
	waitFor(t, func() bool { return g.Stats().Queued == 1 })
	echo(first, "still mine")
	first.Close()
	c, ok := <-second
	if !ok {
		t.FailNow()
	}
	defer c.Close()
	echo(c, "two")
	if m := g.Stats().MaxAdmitted; m != 1 {
		t.Fatalf("admitted %d at once", m)
	}
}
