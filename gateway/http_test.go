package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/store"
)

// raw sends bytes on a fresh connection and returns everything read until the gateway
// closes it or idle passes.
func raw(t *testing.T, addr, req string, idle time.Duration) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		n, err := c.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			var ne net.Error
			closed := !(errorsAs(err, &ne) && ne.Timeout())
			return sb.String(), closed
		}
	}
}

func errorsAs(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}

func TestHopByHopAndForwardedHeaders(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	g := startGateway(t, nil)
	waitReady(t, g, "shared-00001", 1)
	out, _ := raw(t, g.PublicAddr(), "GET /headers?x=1 HTTP/1.1\r\nHost: shared.default.localhost\r\n"+
		"Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9v\r\n"+
		"TE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Keep: yes\r\n\r\n", 500*time.Millisecond)
	for _, bad := range []string{"X-Private", "Keep-Alive", "Proxy-Authorization", "Te:", "Upgrade", "Connection: keep-alive, X-Private"} {
		if strings.Contains(out, bad) {
			t.Errorf("hop-by-hop %q reached the instance:\n%s", bad, out)
		}
	}
	for _, want := range []string{"GET /headers?x=1 HTTP/1.1", "Host: shared.default.localhost", "X-Keep: yes",
		"X-Forwarded-For: 203.0.113.7, 127.0.0.1", "X-Forwarded-Proto: http\n", "X-Forwarded-Host: shared.default.localhost"} {
		if !strings.Contains(out, want) {
			t.Errorf("instance did not get %q:\n%s", want, out)
		}
	}
	out, _ = raw(t, g.PublicAddr(), "GET /hop HTTP/1.1\r\nHost: shared.default.localhost\r\n\r\n", 500*time.Millisecond)
	if !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("/hop: %s", out)
	}
	for _, bad := range []string{"X-Secret", "Keep-Alive", "Proxy-Authenticate", "Connection: X-Secret"} {
		if strings.Contains(out, bad) {
			t.Errorf("hop-by-hop response header %q reached the client:\n%s", bad, out)
		}
	}
	// Paths and queries pass through untouched.
	const uri = "/raw/../a%2Fb//c?q=%20&r"
	out, _ = raw(t, g.PublicAddr(), "GET "+uri+" HTTP/1.1\r\nHost: shared.default.localhost\r\n\r\n", 500*time.Millisecond)
	if !strings.HasSuffix(out, "\r\n\r\n"+uri) {
		t.Errorf("path rewritten:\n%s", out)
	}
}

func TestWebSocketPassThrough(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	g := startGateway(t, nil)
	waitReady(t, g, "shared-00001", 1)
	d := websocket.Dialer{NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, g.PublicAddr()) }, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://shared.default.localhost/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	defer c.Close()
	if resp.Header.Get("X-Revision") != "shared-00001" {
		t.Fatalf("handshake headers %v", resp.Header)
	}
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("ping %d", i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || !strings.HasSuffix(string(got), ": "+msg) {
			t.Fatalf("echo: %q %v", got, err)
		}
	}
	if gi := gaugeOf(t, g, "shared-00001"); gi.InFlight != 1 {
		t.Fatalf("an open WebSocket holds a slot: in flight %d", gi.InFlight)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.Close()
	poll.Until(t, 10*time.Second, "the WebSocket slot released", func() error {
		if gi := gaugeOf(t, g, "shared-00001"); gi.InFlight != 0 {
			return fmt.Errorf("slot not released: %+v", gi)
		}
		return nil
	})
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A 1 GiB upload and a 1 GiB download stream through: the gateway's heap stays small.
func TestStreaming1GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 2 GiB")
	}
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	g := startGateway(t, nil)
	waitReady(t, g, "shared-00001", 1)
	c := client(g, 2)

	runtime.GC() // earlier tests' garbage is not this transfer's
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	const size = 1 << 30
	start := time.Now()
	// Unknown length: chunked all the way.
	req, _ := http.NewRequest("POST", "http://"+host("shared")+"/count", io.LimitReader(zeros{}, size))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != fmt.Sprint(size) {
		t.Fatalf("upload: %d %q", resp.StatusCode, b)
	}
	up := time.Since(start)
	start = time.Now()
	resp, err = c.Get("http://" + host("shared") + fmt.Sprintf("/stream?size=%d", size))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	down := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("1 GiB up in %s, 1 GiB down in %s; peak heap in use %d MiB (client and gateway together)", up.Round(time.Millisecond), down.Round(time.Millisecond), peak.Load()>>20)
	if peak.Load() > 64<<20 {
		t.Fatalf("heap peaked at %d MiB: bodies were buffered", peak.Load()>>20)
	}
}

// Hostile input is refused and costs other clients nothing.
func TestHostileInput(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	g := startGateway(t, func(c *gateway.Config) {
		c.MaxHeaderBytes = 4096
		c.ReadTimeout = time.Second
		c.MaxBodyBytes = 1 << 20
	})
	waitReady(t, g, "shared-00001", 1)
	addr := g.PublicAddr()
	good := func() {
		t.Helper()
		if a := get(client(g, 1), host("shared"), "/"); a.status != 200 || a.took > time.Second {
			t.Fatalf("a well-behaved client got %d after %s", a.status, a.took)
		}
	}

	t.Run("CL+TE smuggling", func(t *testing.T) {
		smuggle := "POST / HTTP/1.1\r\nHost: shared.default.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shared.default.localhost\r\n\r\n"
		out, closed := raw(t, addr, smuggle, 2*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 400") || !closed || strings.Count(out, "HTTP/1.1") != 1 {
			t.Fatalf("closed=%v answer:\n%s", closed, out)
		}
		// The other order and obfuscated spellings fasthttp refuses outright.
		for _, req := range []string{
			"POST / HTTP/1.1\r\nHost: shared.default.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: shared.default.localhost\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nabcd",
			"POST / HTTP/1.1\r\nHost: shared.default.localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: shared.default.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
			"POST / HTTP/1.1\r\nHost: shared.default.localhost\r\nContent-Length: 4\r\n Transfer-Encoding: chunked\r\n\r\nabcd",
		} {
			out, closed := raw(t, addr, req, 2*time.Second)
			if !strings.HasPrefix(out, "HTTP/1.1 400") || !closed {
				t.Errorf("closed=%v for %q:\n%s", closed, req, out)
			}
		}
		good()
	})
	t.Run("oversized headers", func(t *testing.T) {
		out, closed := raw(t, addr, "GET / HTTP/1.1\r\nHost: shared.default.localhost\r\nX-Big: "+strings.Repeat("a", 8000)+"\r\n\r\n", 2*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 431") || !closed {
			t.Fatalf("closed=%v answer:\n%.200s", closed, out)
		}
		good()
	})
	t.Run("oversized body", func(t *testing.T) {
		out, closed := raw(t, addr, "POST /count HTTP/1.1\r\nHost: shared.default.localhost\r\nContent-Length: 2000000\r\n\r\n"+strings.Repeat("a", 9000), 2*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 413") || !closed {
			t.Fatalf("closed=%v answer:\n%.200s", closed, out)
		}
		// Unknown length: cut off once past the limit.
		req, _ := http.NewRequest("POST", "http://"+host("shared")+"/count", io.LimitReader(zeros{}, 3<<20))
		resp, err := client(g, 1).Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Fatalf("chunked 3 MiB body: %d %q", resp.StatusCode, b)
			}
		}
		good()
	})
	t.Run("slow client", func(t *testing.T) {
		// Headers trickled a byte every 200ms: cut at ReadTimeout (1s), others unaffected.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		closedAt := make(chan time.Duration, 1)
		var answer []byte // read before closedAt is sent: safe to look at after it
		go func() {
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				answer = append(answer, buf[:n]...)
				if err != nil {
					closedAt <- time.Since(start)
					return
				}
			}
		}()
		msg := "GET / HTTP/1.1\r\nHost: shared.default.localhost\r\nX-Slow: " + strings.Repeat("s", 100)
		var took time.Duration
	loop:
		for i := 0; i < len(msg); i++ {
			if _, err := c.Write([]byte{msg[i]}); err != nil {
				break
			}
			if i == 2 {
				good() // served while the slow client is connected
			}
			select {
			case took = <-closedAt:
				break loop
			case <-time.After(200 * time.Millisecond):
			}
		}
		if took == 0 {
			select {
			case took = <-closedAt:
			case <-time.After(3 * time.Second):
				t.Fatal("the slow client was never cut off")
			}
		}
		if took > 2*time.Second {
			t.Fatalf("slow client cut after %s, want ≈1s", took)
		}
		if !strings.HasPrefix(string(answer), "HTTP/1.1 408 Request Timeout\r\n") || !strings.HasSuffix(string(answer), "\r\n\r\nrouse: request not received in time\n") {
			t.Fatalf("slow client got %q, want a 408 with rouse's reason", answer)
		}
		t.Logf("slow client cut off after %s", took.Round(time.Millisecond))
		// Slow body: headers complete, body stalls mid-way.
		out, closed := raw(t, addr, "POST /count HTTP/1.1\r\nHost: shared.default.localhost\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("b", 9000), 3*time.Second)
		if !closed {
			t.Fatalf("stalled body: connection still open:\n%s", out)
		}
		good()
	})
}

// SIGTERM: the gateway process stops accepting, finishes the requests in flight — HTTP/1.1
// requests and HTTP/2 streams (whose connection gets GOAWAY) — and exits 0.
func TestSIGTERMDrains(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	bin, err := cluster.GoBuild("./gateway/internal/gatewayd")
	if err != nil {
		t.Fatal(err)
	}
	addrFile := t.TempDir() + "/addr"
	cmd := exec.Command(bin, "-consul", cluster.ConsulAddr, "-public", "127.0.0.1:0", "-admin", "127.0.0.1:0",
		"-addr-file", addrFile, "-access-log", "off", "-drain-timeout", "10s")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	waited := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // no-op once it exited
		<-waited
	})
	var public string
	poll.Until(t, 10*time.Second, "the gateway process's address file", func() error {
		b, err := os.ReadFile(addrFile)
		if err != nil || len(strings.Fields(string(b))) != 2 {
			return fmt.Errorf("no address file yet")
		}
		public = strings.Fields(string(b))[0]
		return nil
	})
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, public)
	}}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	poll.Until(t, 30*time.Second, "the gateway process serving", func() error {
		if a := get(c, host("shared"), "/"); a.status != 200 {
			return fmt.Errorf("gateway not serving yet: %d %v", a.status, a.err)
		}
		return nil
	})

	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: &p, DialContext: tr.DialContext}}
	if a := get(h2, host("shared"), "/"); a.status != 200 { // one connection, up before the burst
		t.Fatalf("HTTP/2 through the gateway process: %d %v", a.status, a.err)
	}
	const n = 6
	results := make(chan answer, 2*n)
	for i := 0; i < n; i++ {
		go func() { results <- get(c, host("shared"), "/?sleep=2s") }()
		go func() { results <- get(h2, host("shared"), "/?sleep=2s") }()
	}
	time.Sleep(300 * time.Millisecond) // all six are in flight
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if conn, err := net.DialTimeout("tcp", public, time.Second); err == nil {
		conn.Close()
		t.Error("the gateway still accepts connections after SIGTERM")
	}
	for i := 0; i < 2*n; i++ {
		if a := <-results; a.status != 200 || a.err != nil {
			t.Fatalf("in-flight request %d: %d %v", i, a.status, a.err)
		}
	}
	// The HTTP/2 connection was told GOAWAY: a new stream is not taken on it (and no new
	// connection is accepted), so the request fails at once rather than hang.
	start := time.Now()
	if a := get(h2, host("shared"), "/"); a.err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("a new HTTP/2 request after the drain: %d %v after %v, want a prompt error", a.status, a.err, time.Since(start))
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
		t.Logf("drained %d in-flight requests and exited 0 %s after SIGTERM", n, time.Since(sent).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatalf("did not exit after SIGTERM\n%s", logs.String())
	}
}
