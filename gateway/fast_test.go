package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/store"
)

// dialPublic opens a raw connection to the gateway's public listener, closed when the
// test ends, with a reader for its responses.
func dialPublic(t *testing.T, g *gateway.Gateway) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", g.PublicAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

// One client connection carries keep-alive and pipelined requests of every kind: small
// bodies, HEAD, chunked responses, header rewriting, a chunked upload, then more.
func TestKeepAliveAndPipelining(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	g := startGateway(t, nil)
	waitReady(t, g, "shared-00001", 1)

	c, br := dialPublic(t, g)
	read := func(method string) *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		return resp
	}
	body := func(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }
	hostHdr := "Host: " + host("shared") + "\r\n"

	// Keep-alive, then three pipelined requests in one write, answered in order.
	for i := 0; i < 20; i++ {
		fmt.Fprintf(c, "GET /?i=%d HTTP/1.1\r\n%s\r\n", i, hostHdr)
		if r := read("GET"); r.StatusCode != 200 || r.Header.Get("X-Revision") != "shared-00001" {
			t.Fatalf("request %d: %d %v", i, r.StatusCode, r.Header)
		}
	}
	fmt.Fprintf(c, "POST /count HTTP/1.1\r\n%sContent-Length: 5\r\n\r\nhelloHEAD / HTTP/1.1\r\n%s\r\nGET /stream?size=100000 HTTP/1.1\r\n%s\r\n", hostHdr, hostHdr, hostHdr)
	if r := read("POST"); body(r) != "5\n" {
		t.Fatalf("small body: %d %q", r.StatusCode, body(r))
	}
	if r := read("HEAD"); r.StatusCode != 200 || body(r) != "" {
		t.Fatalf("HEAD: %d %q", r.StatusCode, body(r))
	}
	r := read("GET")
	if b := body(r); len(b) != 100000 || strings.Trim(b, "x") != "" || len(r.TransferEncoding) == 0 {
		t.Fatalf("chunked download: %d bytes, transfer encoding %v", len(b), r.TransferEncoding)
	}
	// Hop-by-hop request headers go; X-Forwarded-* are set.
	fmt.Fprintf(c, "GET /headers HTTP/1.1\r\n%sKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\nX-Forwarded-For: 203.0.113.7\r\nX-Keep: yes\r\n\r\n", hostHdr)
	b := body(read("GET"))
	for _, bad := range []string{"Keep-Alive", "Te:", "Proxy-Authorization"} {
		if strings.Contains(b, bad) {
			t.Errorf("%q reached the instance:\n%s", bad, b)
		}
	}
	for _, want := range []string{"GET /headers HTTP/1.1", "X-Keep: yes", "X-Forwarded-For: 203.0.113.7, 127.0.0.1", "X-Forwarded-Proto: http\n", "X-Forwarded-Host: " + host("shared")} {
		if !strings.Contains(b, want) {
			t.Errorf("instance did not get %q:\n%s", want, b)
		}
	}

	// A chunked upload, and a request after it on the same connection.
	fmt.Fprintf(c, "POST /count HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n%s\r\n", hostHdr, hostHdr)
	if r := read("POST"); body(r) != "3\n" {
		t.Fatalf("chunked upload: %d %q", r.StatusCode, body(r))
	}
	if r := read("GET"); r.StatusCode != 200 {
		t.Fatalf("after the chunked upload: %d", r.StatusCode)
	}

	// Connection: close is honoured.
	out, closed := raw(t, g.PublicAddr(), "GET / HTTP/1.1\r\n"+hostHdr+"Connection: close\r\n\r\n", 2*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "Connection: close") || !closed {
		t.Fatalf("Connection: close: closed=%v\n%s", closed, out)
	}
	// Unknown hosts are answered 404.
	out, _ = raw(t, g.PublicAddr(), "GET / HTTP/1.1\r\nHost: nobody.default.localhost\r\n\r\n", 500*time.Millisecond)
	if !strings.HasPrefix(out, "HTTP/1.1 404") {
		t.Fatalf("unknown host:\n%s", out)
	}
}

// MaxConns bounds open client connections: one more is answered 503 and closed; when one
// closes, a new one is served.
func TestConnectionLimit(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	g := startGateway(t, func(c *gateway.Config) { c.MaxConns = 2 })
	waitReady(t, g, "shared-00001", 1)
	const get = "GET / HTTP/1.1\r\nHost: shared.default.localhost\r\n\r\n"
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", g.PublicAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, get); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v %v", len(open)+1, resp, err)
		}
		resp.Body.Close()
		open = append(open, c)
	}
	out, closed := raw(t, g.PublicAddr(), get, 3*time.Second)
	if !closed || !strings.HasPrefix(out, "HTTP/1.1 503 ") || !strings.HasSuffix(out, "\r\n\r\nrouse: too many open connections\n") {
		t.Fatalf("third connection: closed=%v %q", closed, out)
	}
	open[0].Close()
	poll.Until(t, 5*time.Second, "a new connection served after one closed", func() error {
		out, _ := raw(t, g.PublicAddr(), "GET / HTTP/1.1\r\nHost: shared.default.localhost\r\nConnection: close\r\n\r\n", 3*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 200 ") {
			return fmt.Errorf("got %q", out)
		}
		return nil
	})
}

// One JSON access-log entry per request on both paths, with what the issue asks for: host,
// method, uri, status, bytes, duration, remote, and the revision and instance it went to.
func TestAccessLog(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	var out lockedBuffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &out, zap.InfoLevel)
	g := startGateway(t, func(c *gateway.Config) { c.AccessLog = zap.New(core) })
	waitReady(t, g, "shared-00001", 1)

	c, br := dialPublic(t, g)
	for _, req := range []string{
		"GET /?x=1 HTTP/1.1\r\nHost: shared.default.localhost:8080\r\n\r\n",                                                 // fast path
		"POST /count HTTP/1.1\r\nHost: shared.default.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", // general path
		"GET /nothing HTTP/1.1\r\nHost: nobody.default.localhost\r\n\r\n",                                                   // 404 of the gateway's own
	} {
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// The line is written after the response: wait for the third.
	var lines []string
	poll.Until(t, 5*time.Second, "three access-log lines", func() error {
		if lines = strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) < 3 {
			return fmt.Errorf("%d lines:\n%s", len(lines), out.String())
		}
		return nil
	})
	if len(lines) != 3 {
		t.Fatalf("%d access-log lines, want 3:\n%s", len(lines), out.String())
	}
	for i, want := range []map[string]any{
		{"host": "shared.default.localhost:8080", "method": "GET", "uri": "/?x=1", "status": 200, "namespace": "default", "revision": "shared-00001"},
		{"host": "shared.default.localhost", "method": "POST", "uri": "/count", "status": 200, "namespace": "default", "revision": "shared-00001"},
		{"host": "nobody.default.localhost", "method": "GET", "uri": "/nothing", "status": 404},
	} {
		var e map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &e); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, lines[i])
		}
		for k, v := range want {
			if fmt.Sprint(e[k]) != fmt.Sprint(v) {
				t.Errorf("entry %d: %s = %v, want %v (%v)", i, k, e[k], v, e)
			}
		}
		if e["remote"] != c.LocalAddr().String() {
			t.Errorf("entry %d: remote = %v, want %s", i, e["remote"], c.LocalAddr())
		}
		if d, _ := e["duration"].(float64); d <= 0 || d > 5 { // seconds
			t.Errorf("entry %d: duration = %v", i, e["duration"])
		}
		if n, _ := e["bytes"].(float64); n <= 0 {
			t.Errorf("entry %d: bytes = %v", i, e["bytes"])
		}
		_, routed := want["revision"]
		if in, _ := e["instance"].(string); routed != strings.HasPrefix(in, "127.0.0.1:") {
			t.Errorf("entry %d: instance = %v", i, e["instance"])
		}
		if _, ok := e["cold_start"]; ok {
			t.Errorf("entry %d: cold_start on a request that did not wait: %v", i, e)
		}
	}
}

// lockedBuffer is a zap sink the test can read while the gateway writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Sync() error { return nil }

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
