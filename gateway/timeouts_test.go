package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// Knative's three request timeouts through a real gateway, on every path: HTTP/1.1 and
// HTTP/2 clients, HTTP/1.1 and h2c instances, and a WebSocket tunnel. The revision has
// timeout 10s, response_start_timeout 300ms and idle_timeout 600ms; each instance has
//
//	/slowhead  its head after 1.5s                → 504 response_start_timeout at 300ms
//	/pause     its head and "first", then 2s quiet → cut 600ms after "first"
//	/steady    a chunk every 200ms for 2s          → whole (idle is per pause, not total)
const (
	tStart = 300 * time.Millisecond
	tIdle  = 600 * time.Millisecond
	// tLate is how late a bound may be seen here: its slack (1 %) and a loaded machine.
	tLate = 500 * time.Millisecond
)

func timeoutsConfig(h2c bool) func(*revmeta.Config) {
	return func(c *revmeta.Config) {
		if !h2c {
			c.Protocol = revmeta.ProtocolHTTP1
		}
		c.Timeout, c.ResponseStartTimeout, c.IdleTimeout = 10*time.Second, tStart, tIdle
	}
}

// timeoutsH1Script is the HTTP/1.1 instance, with /echo a WebSocket-like tunnel
// (upgradeScript's).
var timeoutsH1Script = serveEach(func(c *recConn, r *recReq) bool {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
	switch r.Target {
	case "/slowhead":
		time.Sleep(1500 * time.Millisecond)
		return c.write(okResponse("late")) == nil
	case "/pause":
		if c.write(head+"5\r\nfirst\r\n") != nil {
			return false
		}
		time.Sleep(2 * time.Second)
		return c.write("4\r\nlast\r\n0\r\n\r\n") == nil
	case "/steady":
		if c.write(head) != nil {
			return false
		}
		for i := range 10 {
			time.Sleep(200 * time.Millisecond)
			if c.write(fmt.Sprintf("1\r\n%d\r\n", i)) != nil {
				return false
			}
		}
		return c.write("0\r\n\r\n") == nil
	case "/echo":
		if c.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n") != nil {
			return false
		}
		_, _ = io.Copy(c.c, c.br)
		c.b.note("echo-closed")
		return false
	}
	return echoTarget(c, r)
})

// timeoutsH2CInstance is the h2c instance: the same three paths.
func timeoutsH2CInstance(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		sleep := func(d time.Duration) bool {
			select {
			case <-time.After(d):
				return true
			case <-r.Context().Done():
				return false
			}
		}
		rc := http.NewResponseController(w)
		switch r.URL.Path {
		case "/slowhead":
			if sleep(1500 * time.Millisecond) {
				_, _ = io.WriteString(w, "late")
			}
		case "/pause":
			_, _ = io.WriteString(w, "first")
			_ = rc.Flush()
			if sleep(2 * time.Second) {
				_, _ = io.WriteString(w, "last")
			}
		case "/steady":
			_ = rc.Flush()
			for i := range 10 {
				if !sleep(200 * time.Millisecond) {
					return
				}
				fmt.Fprint(w, i)
				_ = rc.Flush()
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// timedBody reads a response body to its end: what it read, how long after the first
// byte the body ended, and how it ended.
func timedBody(body io.Reader) (got string, after time.Duration, err error) {
	buf := make([]byte, 4096)
	var first time.Time
	var b strings.Builder
	for {
		n, rerr := body.Read(buf)
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		b.Write(buf[:n])
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			return b.String(), time.Since(first), err
		}
	}
}

// h1Get sends GET path over HTTP/1.1 on a new connection and returns the response,
// with its body unread, and when the request went out.
func h1Get(t *testing.T, g *gateway.Gateway, svc, path string, extra string) (*http.Response, time.Time) {
	t.Helper()
	c, err := net.Dial("tcp", g.PublicAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	sent := time.Now()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host(svc)+"\r\n"+extra+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return resp, sent
}

func within(d, bound time.Duration) bool { return d >= bound-20*time.Millisecond && d <= bound+tLate }

// checkTimeouts runs the three cases with get, one client's way of sending a request.
func checkTimeouts(t *testing.T, get func(path string) (*http.Response, time.Time), reset string) {
	t.Run("response start", func(t *testing.T) {
		resp, sent := get("/slowhead")
		b, _ := io.ReadAll(resp.Body)
		took := time.Since(sent)
		if resp.StatusCode != 504 || !strings.Contains(string(b), "response_start_timeout of 300ms") || !within(took, tStart) {
			t.Errorf("a head after 1.5s: %d %q after %s, want 504 naming response_start_timeout of 300ms after %s", resp.StatusCode, b, took, tStart)
		}
		t.Logf("504 after %s (bound %s)", took.Round(time.Millisecond), tStart)
	})
	t.Run("idle mid-body", func(t *testing.T) {
		resp, _ := get("/pause")
		got, after, err := timedBody(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || got != "first" || err == nil || !within(after, tIdle) {
			t.Errorf("a body quiet for 2s: %d %q, ended %s after its first byte with %v; want %q cut (%s) after %s",
				resp.StatusCode, got, after, err, "first", reset, tIdle)
		}
		t.Logf("cut %s after the last byte (bound %s): %v", after.Round(time.Millisecond), tIdle, err)
	})
	t.Run("steady stream", func(t *testing.T) {
		resp, sent := get("/steady")
		got, _, err := timedBody(resp.Body)
		resp.Body.Close()
		if took := time.Since(sent); resp.StatusCode != 200 || got != "0123456789" || err != nil || took < 2*time.Second {
			t.Errorf("a chunk every 200ms for 2s: %d %q (%v) after %s, want all of it", resp.StatusCode, got, err, took)
		}
	})
}

func TestTimeoutsHTTP1Instance(t *testing.T) {
	const svc = "timeouts-h1"
	var access lockedBuffer
	be := newRecBackend(t, timeoutsH1Script)
	g := routePorts(t, svc, timeoutsConfig(false), func(c *gateway.Config) {
		c.AccessLog = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &access, zap.InfoLevel))
	}, be.port())

	t.Run("HTTP/1.1", func(t *testing.T) {
		checkTimeouts(t, func(path string) (*http.Response, time.Time) { return h1Get(t, g, svc, path, "") }, "the connection closes")
	})
	t.Run("HTTP/2", func(t *testing.T) {
		c := h2Client(g, nil)
		checkTimeouts(t, func(path string) (*http.Response, time.Time) {
			sent := time.Now()
			resp, err := c.Get("http://" + host(svc) + path)
			if err != nil {
				t.Fatal(err)
			}
			return resp, sent
		}, "the stream is reset")
	})
	t.Run("WebSocket tunnel", func(t *testing.T) {
		rc := dialRaw(t, g.PublicAddr())
		if a := rc.do("GET /echo HTTP/1.1\r\nHost: "+host(svc)+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", "GET", 5*time.Second); a.err != nil || a.status != 101 {
			t.Fatalf("upgrade: %s, want 101", a)
		}
		// Busy for longer than idle_timeout: idleness is timed, not the tunnel's age.
		for i := range 6 {
			msg := fmt.Sprintf("ping %d\n", i)
			if err := rc.send(msg); err != nil {
				t.Fatalf("ping %d: %v", i, err)
			}
			_ = rc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if got, err := rc.br.ReadString('\n'); got != msg || err != nil {
				t.Fatalf("ping %d echoed %q, %v", i, got, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		closed, extra, after := rc.waitClose(5 * time.Second)
		// Measured from the wait's start, 200ms after the last echo.
		if !closed || !within(after+200*time.Millisecond, tIdle) {
			t.Fatalf("a tunnel quiet for %s with idle_timeout %s (the gateway's IdleTimeout 90s): closed=%v (read %q)", after+200*time.Millisecond, tIdle, closed, extra)
		}
		t.Logf("closed %s after the last byte (bound %s)", (after + 200*time.Millisecond).Round(time.Millisecond), tIdle)
		be.waitEvent(t, "echo-closed", 1, 3*time.Second)
	})

	// Each reason is counted (the two 504s) and logged (the 504s and the cut bodies).
	metrics := adminGet(t, g, "/metrics")
	if !strings.Contains(metrics, `rouse_gateway_rejected_requests_total{reason="response_start_timeout"} 2`) {
		t.Errorf(`rouse_gateway_rejected_requests_total{reason="response_start_timeout"} is not 2`)
	}
	poll.Until(t, 5*time.Second, "the access log's timeouts", poll.True(func() bool {
		log := access.String()
		return strings.Count(log, `"timeout":"idle_timeout"`) == 3 && strings.Count(log, `"status":504`) == 2
	}))
}

func TestTimeoutsH2CInstance(t *testing.T) {
	const svc = "timeouts-h2c"
	g := routePorts(t, svc, timeoutsConfig(true), nil, timeoutsH2CInstance(t))
	t.Run("HTTP/2", func(t *testing.T) {
		c := h2Client(g, nil)
		checkTimeouts(t, func(path string) (*http.Response, time.Time) {
			sent := time.Now()
			resp, err := c.Get("http://" + host(svc) + path)
			if err != nil {
				t.Fatal(err)
			}
			return resp, sent
		}, "the stream is reset")
	})
	t.Run("HTTP/1.1", func(t *testing.T) {
		checkTimeouts(t, func(path string) (*http.Response, time.Time) { return h1Get(t, g, svc, path, "") }, "the connection closes")
	})
	t.Run("gRPC", func(t *testing.T) {
		c := h2Client(g, nil)
		req, _ := http.NewRequest("POST", "http://"+host(svc)+"/slowhead", strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		sent := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(sent)
		if st := resp.Header.Get("Grpc-Status"); resp.StatusCode != 200 || st != "4" || !strings.Contains(resp.Header.Get("Grpc-Message"), "response_start_timeout") || !within(took, tStart) {
			t.Errorf("a gRPC call answered after 1.5s: %d grpc-status %q (%q) after %s, want DEADLINE_EXCEEDED (4) after %s",
				resp.StatusCode, st, resp.Header.Get("Grpc-Message"), took, tStart)
		}
	})
	if m := adminGet(t, g, "/metrics"); !strings.Contains(m, `rouse_gateway_rejected_requests_total{reason="response_start_timeout"} 3`) {
		t.Errorf(`rouse_gateway_rejected_requests_total{reason="response_start_timeout"} is not 3`)
	}
}

// idle_timeout bounds the wait for the head too (no byte either way), when it ends
// before response_start_timeout.
func TestTimeoutsIdleBeforeHead(t *testing.T) {
	const svc = "timeouts-idle-head"
	be := newRecBackend(t, timeoutsH1Script)
	g := routePorts(t, svc, func(c *revmeta.Config) {
		c.Protocol, c.Timeout, c.ResponseStartTimeout, c.IdleTimeout = revmeta.ProtocolHTTP1, 10*time.Second, 0, tStart
	}, nil, be.port())
	resp, sent := h1Get(t, g, svc, "/slowhead", "")
	b, _ := io.ReadAll(resp.Body)
	if took := time.Since(sent); resp.StatusCode != 504 || !strings.Contains(string(b), "idle_timeout of 300ms") || !within(took, tStart) {
		t.Errorf("a head after 1.5s, idle_timeout 300ms: %d %q after %s, want 504 naming idle_timeout", resp.StatusCode, b, took)
	}
	if m := adminGet(t, g, "/metrics"); !strings.Contains(m, `rouse_gateway_rejected_requests_total{reason="idle_timeout"} 1`) {
		t.Errorf(`rouse_gateway_rejected_requests_total{reason="idle_timeout"} is not 1`)
	}
}

// slowBody is a request body of 6 parts 200ms apart: 1.2s, longer than
// response_start_timeout, never idle for idle_timeout.
func slowBody() io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for i := range 6 {
			time.Sleep(200 * time.Millisecond)
			if _, err := fmt.Fprint(pw, i); err != nil {
				return
			}
		}
		pw.Close()
	}()
	return pr
}

// response_start_timeout counts from the request sent, its streamed body included: an
// upload slower than it, answered at once, is not a timeout.
func TestTimeoutsSlowUpload(t *testing.T) {
	h1 := routePorts(t, "timeouts-up-h1", timeoutsConfig(false), nil, newRecBackend(t, timeoutsH1Script).port())
	h2c := routePorts(t, "timeouts-up-h2c", timeoutsConfig(true), nil, timeoutsH2CInstance(t))
	for _, tc := range []struct {
		svc string
		g   *gateway.Gateway
	}{{"timeouts-up-h1", h1}, {"timeouts-up-h2c", h2c}} {
		t.Run(tc.svc+"/HTTP/2", func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://"+host(tc.svc)+"/upload", slowBody())
			resp, err := h2Client(tc.g, nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("a 1.2s upload: %d %q, want 200", resp.StatusCode, b)
			}
		})
		t.Run(tc.svc+"/HTTP/1.1", func(t *testing.T) {
			c, err := net.Dial("tcp", tc.g.PublicAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			req, _ := http.NewRequest("POST", "http://"+host(tc.svc)+"/upload", slowBody())
			req.TransferEncoding = []string{"chunked"}
			if err := req.Write(c); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("a 1.2s upload: %d %q, want 200", resp.StatusCode, b)
			}
		})
	}
}
