package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// HTTP/2 from clients through a real gateway (its routes in the package's real Consul):
// over TLS with ALPN h2, h2c with prior knowledge, and Upgrade: h2c; to instances that
// speak HTTP/1.1 (the recording backend) and to instances that speak h2c.

// h2Client is an HTTP/2 client of g's public listener whatever the URL's host (kept as
// :authority): over TLS with ALPN h2 when pki is set, else h2c with prior knowledge.
// One connection carries every request.
func h2Client(g *gateway.Gateway, pki *testPKI) *http.Client {
	return h2ClientCounting(g, pki, nil)
}

// h2ClientCounting is h2Client, counting the connections it dials in dials (if set).
func h2ClientCounting(g *gateway.Gateway, pki *testPKI, dials *atomic.Int64) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	var p http.Protocols
	tr := &http.Transport{Protocols: &p, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if dials != nil {
			dials.Add(1)
		}
		return d.DialContext(ctx, "tcp", g.PublicAddr())
	}}
	if pki == nil {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true) // ALPN h2 only: an http/1.1 answer fails the handshake
		tr.TLSClientConfig = &tls.Config{RootCAs: pki.pool}
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// h2Modes are the two ways a client starts HTTP/2 without an upgrade.
func h2Modes(t *testing.T) []struct {
	name, scheme, proto string
	pki                 *testPKI
} {
	pki := newTestPKI(t, "*."+ns+".localhost")
	return []struct {
		name, scheme, proto string
		pki                 *testPKI
	}{{"h2c", "http", "http", nil}, {"tls", "https", "https", &pki}}
}

// Each HTTP/2 request reaches an HTTP/1.1 instance as the same request an HTTP/1.1
// client would have sent: origin-form, Host, X-Forwarded-*, a small body with its
// length, a body of unknown length chunked; the instance's chunked answer reaches the
// client as data, with its fields and no hop-by-hop ones.
func TestHTTP2ToHTTP1Instance(t *testing.T) {
	for _, m := range h2Modes(t) {
		t.Run(m.name, func(t *testing.T) {
			svc := "h2-to-h1-" + m.name
			be := newRecBackend(t, serveEach(func(c *recConn, r *recReq) bool {
				body := fmt.Sprintf("%s %s %d", r.Method, r.Target, len(r.Body))
				// A chunked answer with a hop-by-hop field the client must not get.
				resp := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-App: yes\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n" +
					strconv.FormatInt(int64(len(body)), 16) + "\r\n" + body + "\r\n0\r\n\r\n"
				return c.write(resp) == nil
			}))
			mod := func(*gateway.Config) {}
			if m.pki != nil {
				mod = m.pki.withTLS(false)
			}
			g := routeBackend(t, svc, be, mod)
			c := h2Client(g, m.pki)
			base := m.scheme + "://" + host(svc)

			get := func(method, path string, body io.Reader) (*http.Response, string) {
				t.Helper()
				req, _ := http.NewRequest(method, base+path, body)
				if body != nil {
					req.Header.Set("Content-Type", "application/octet-stream")
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", method, path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Fatalf("answered over %s", resp.Proto)
				}
				return resp, string(b)
			}
			resp, body := get("GET", "/x/1?q=a%20b", nil)
			if resp.StatusCode != 200 || body != "GET /x/1?q=a%20b 0" || resp.Header.Get("X-App") != "yes" {
				t.Fatalf("GET: %d %q %v", resp.StatusCode, body, resp.Header)
			}
			if v := resp.Header.Get("Keep-Alive"); v != "" {
				t.Errorf("hop-by-hop Keep-Alive reached the HTTP/2 client: %q", v)
			}
			small := strings.Repeat("s", 5000)
			if _, body = get("POST", "/small", strings.NewReader(small)); body != "POST /small 5000" {
				t.Errorf("small POST: %q", body)
			}
			// Unknown length: the request body streams from a pipe.
			pr, pw := io.Pipe()
			go func() {
				for range 10 {
					_, _ = pw.Write(bytes.Repeat([]byte("c"), 10000))
				}
				pw.Close()
			}()
			if _, body = get("POST", "/stream", pr); body != "POST /stream 100000" {
				t.Errorf("streamed POST: %q", body)
			}
			reqs := be.requests()
			if len(reqs) != 3 {
				t.Fatalf("the instance got %d requests, want 3", len(reqs))
			}
			for _, r := range reqs {
				if r.Proto != "HTTP/1.1" || r.Err != nil {
					t.Errorf("%s", r)
				}
				if h := r.values("Host"); len(h) != 1 || h[0] != host(svc) {
					t.Errorf("%s: Host %q", r.Line, h)
				}
				if p := r.values("X-Forwarded-Proto"); len(p) != 1 || p[0] != m.proto {
					t.Errorf("%s: X-Forwarded-Proto %q, want %s", r.Line, p, m.proto)
				}
				if f := r.values("X-Forwarded-For"); len(f) != 1 || f[0] != "127.0.0.1" {
					t.Errorf("%s: X-Forwarded-For %q", r.Line, f)
				}
			}
			if cl := reqs[1].values("Content-Length"); len(cl) != 1 || cl[0] != "5000" {
				t.Errorf("small body framing: Content-Length %q, Transfer-Encoding %q", cl, reqs[1].values("Transfer-Encoding"))
			}
			if te := reqs[2].values("Transfer-Encoding"); len(te) != 1 || te[0] != "chunked" || len(reqs[2].values("Content-Length")) != 0 {
				t.Errorf("streamed body framing: Transfer-Encoding %q, Content-Length %q", te, reqs[2].values("Content-Length"))
			}
			// The access log, metrics and gauges saw them: 3 completed with 200.
			if !strings.Contains(adminGet(t, g, "/metrics"), `rouse_gateway_requests_total{code="200",namespace="`+ns+`",revision="`+svc+`-00001",service="`+svc+`"} 3`) {
				t.Errorf("metrics do not count 3 answers with 200:\n%s", grepLines(adminGet(t, g, "/metrics"), svc))
			}
		})
	}
}

// An HTTP/1.1 request with Upgrade: h2c on the plain listener is answered 101 and served
// as stream 1 of an HTTP/2 connection, on which more streams then go; the instance sees
// none of the upgrade's fields.
func TestH2CUpgrade(t *testing.T) {
	const svc = "h2c-upgrade"
	be := newRecBackend(t, serveEach(echoTarget))
	g := routeBackend(t, svc, be, nil)
	c, err := net.DialTimeout("tcp", g.PublicAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /first HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", host(svc))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "h2c" {
		t.Fatalf("upgrade answer: %v %v", resp, err)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, br)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// Stream 3 on the same connection, after stream 1 (the upgrade's request).
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", host(svc)}, {":path", "/second"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	got := map[uint32]string{}
	status := map[uint32]string{}
	ended := map[uint32]bool{}
	for len(ended) < 2 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames: %v (got %v %v)", err, status, got)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status[f.StreamID] = f.PseudoValue("status")
			if f.StreamEnded() {
				ended[f.StreamID] = true
			}
		case *http2.DataFrame:
			got[f.StreamID] += string(f.Data())
			if f.StreamEnded() {
				ended[f.StreamID] = true
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
	if status[1] != "200" || got[1] != "/first" || status[3] != "200" || got[3] != "/second" {
		t.Fatalf("stream 1: %s %q; stream 3: %s %q", status[1], got[1], status[3], got[3])
	}
	for _, r := range be.requests() {
		for _, h := range []string{"Upgrade", "HTTP2-Settings", "Connection"} {
			if v := r.values(h); len(v) > 0 {
				t.Errorf("%s reached the instance with %s: %q", r.Line, h, v)
			}
		}
	}
}

// h2cBackend is an instance that speaks h2c only (Go's net/http with unencrypted HTTP/2
// and no HTTP/1.1), answering its name and counting what it serves.
type h2cBackend struct {
	name              string
	srv               *http.Server
	ln                net.Listener
	served, inFlight  atomic.Int64
	maxInFlight       atomic.Int64
	sleep             time.Duration
	mu                sync.Mutex
	protos, forwarded []string
}

func newH2CBackend(t *testing.T, name string, sleep time.Duration) *h2cBackend {
	t.Helper()
	b := &h2cBackend{name: name, sleep: sleep}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.ln = ln
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	b.srv = &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := b.inFlight.Add(1)
		defer b.inFlight.Add(-1)
		for m := b.maxInFlight.Load(); n > m && !b.maxInFlight.CompareAndSwap(m, n); m = b.maxInFlight.Load() {
		}
		b.mu.Lock()
		b.protos = append(b.protos, r.Proto)
		b.forwarded = append(b.forwarded, r.Header.Get("X-Forwarded-Proto"))
		b.mu.Unlock()
		if r.URL.Path == "/healthz" {
			return
		}
		body, _ := io.ReadAll(r.Body)
		if b.sleep > 0 {
			time.Sleep(b.sleep)
		}
		b.served.Add(1)
		w.Header().Set("Trailer", "X-Served-By")
		fmt.Fprintf(w, "%s %s %d", b.name, r.URL.RequestURI(), len(body))
		w.Header().Set("X-Served-By", b.name)
	})}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func (b *h2cBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// routeH2C serves svc from the h2c backends (revision svc-00001, protocol h2c), registered
// in Consul with passing TTL checks, and starts a gateway that routes to all of them.
func routeH2C(t *testing.T, svc string, cfgMod func(*revmeta.Config), mod func(*gateway.Config), bs ...*h2cBackend) *gateway.Gateway {
	t.Helper()
	ports := make([]int, len(bs))
	for i, b := range bs {
		ports[i] = b.port()
	}
	return routePorts(t, svc, cfgMod, mod, ports...)
}

// routePorts is routeH2C for instances on loopback ports.
func routePorts(t testing.TB, svc string, cfgMod func(*revmeta.Config), mod func(*gateway.Config), ports ...int) *gateway.Gateway {
	t.Helper()
	rev := svc + "-00001"
	cfg := revmeta.Defaults(ns, svc, rev)
	cfg.Timeout = 10 * time.Second
	cfg.Protocol = revmeta.ProtocolH2C
	if cfgMod != nil {
		cfgMod(&cfg)
	}
	registerRevision(t, cfg, ports...)
	setRoute(t, svc, store.RouteTarget{Revision: rev, Percent: 100})
	g := startGateway(t, mod)
	if len(ports) > 0 {
		waitReady(t, g, rev, len(ports))
	} else {
		waitRoutes(t, g, host(svc))
	}
	return g
}

// waitRoutes waits until g routes host.
func waitRoutes(t testing.TB, g *gateway.Gateway, h string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tbl := g.Table(); tbl != nil && tbl.Lookup([]byte(h)) != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway does not route %s", h)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// One HTTP/2 client connection carrying many requests spreads them over every h2c
// instance (per-stream balancing), with bodies and trailers passed through; HTTP/1.1
// clients reach the same h2c instances through the gateway's translation.
func TestH2CInstancesPerRequestBalancing(t *testing.T) {
	const svc, n, conc = "h2c-spread", 400, 8
	var bs []*h2cBackend
	for i := range 4 {
		bs = append(bs, newH2CBackend(t, fmt.Sprintf("i%d", i), 2*time.Millisecond))
	}
	g := routeH2C(t, svc, nil, nil, bs...)
	var conns atomic.Int64
	c := h2ClientCounting(g, nil, &conns)
	// One request first: net/http's client dials once per request until a connection is
	// up, and the test is about one connection.
	if resp, err := c.Get("http://" + host(svc) + "/warm"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	for _, b := range bs {
		b.served.Store(0)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, conc)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := c.Post("http://"+host(svc)+"/p/"+strconv.Itoa(i), "text/plain", strings.NewReader("body"))
			if err != nil {
				bad.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			name, rest, _ := strings.Cut(string(b), " ")
			if resp.StatusCode != 200 || rest != fmt.Sprintf("/p/%d 4", i) || resp.Trailer.Get("X-Served-By") != name {
				bad.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q trailer %v", resp.StatusCode, b, resp.Trailer))
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", bad.Load(), n, firstErr.Load())
	}
	if conns.Load() != 1 {
		t.Errorf("the client opened %d connections, want 1", conns.Load())
	}
	// Stated bound: each of 4 instances serves 15%–35% of the requests (an even share is
	// 25%; one connection pinned to one instance would give 100% and 0%).
	for _, b := range bs {
		share := float64(b.served.Load()) / n
		t.Logf("instance %s served %d (%.0f%%), at most %d at once", b.name, b.served.Load(), share*100, b.maxInFlight.Load())
		if share < 0.15 || share > 0.35 {
			t.Errorf("instance %s served %.0f%% of one connection's requests, want 15%%–35%%", b.name, share*100)
		}
		for _, p := range b.protos {
			if p != "HTTP/2.0" {
				t.Fatalf("instance %s was spoken to in %s", b.name, p)
			}
		}
	}

	// HTTP/1.1 clients, same instances.
	hc := client(g, 1)
	for i := range 8 {
		a := get(hc, host(svc), "/h1/"+strconv.Itoa(i))
		if a.status != 200 || !strings.HasSuffix(a.body, fmt.Sprintf(" /h1/%d 0", i)) {
			t.Fatalf("HTTP/1.1 request %d to an h2c revision: %d %q", i, a.status, a.body)
		}
	}
}

// The per-instance limit holds per stream: with concurrency = 1 and two instances, 12
// streams at once on one connection never put two requests on one instance; the rest
// queue and all are served.
func TestHTTP2StreamsObeyConcurrency(t *testing.T) {
	const svc = "h2-limit"
	bs := []*h2cBackend{newH2CBackend(t, "a", 100*time.Millisecond), newH2CBackend(t, "b", 100*time.Millisecond)}
	g := routeH2C(t, svc, func(c *revmeta.Config) { c.Concurrency = 1 }, nil, bs...)
	c := h2Client(g, nil)
	var wg sync.WaitGroup
	var bad atomic.Int64
	start := time.Now()
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get("http://" + host(svc) + "/l/" + strconv.Itoa(i))
			if err != nil {
				bad.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if bad.Load() > 0 {
		t.Fatalf("%d of 12 failed", bad.Load())
	}
	for _, b := range bs {
		if m := b.maxInFlight.Load(); m != 1 {
			t.Errorf("instance %s had %d requests at once, limit 1", b.name, m)
		}
	}
	// 12 requests of 100 ms, 2 at a time: at least 600 ms.
	if took < 600*time.Millisecond {
		t.Errorf("12 requests took %v: the limit did not queue them", took)
	}
}

// Over HTTP/2 the split is drawn per stream (one connection reaches both revisions in
// proportion), a tag's host reaches its revision, and the revision's timeout answers 504.
func TestHTTP2SplitTagsAndTimeout(t *testing.T) {
	const svc = "h2-split"
	slow := func(c *recConn, r *recReq) bool {
		if strings.HasPrefix(r.Target, "/slow") {
			time.Sleep(1500 * time.Millisecond)
		}
		return echoTarget(c, r)
	}
	a := newRecBackend(t, serveEach(slow))
	g := routeBackend(t, svc, a, nil)
	// A second revision, 50/50 with the first, tagged "b"; a 500 ms timeout on both.
	b := newRecBackend(t, serveEach(slow))
	t.Cleanup(b.stop)
	rev2 := svc + "-00002"
	for i, rev := range []string{svc + "-00001", rev2} {
		cfg := revmeta.Defaults(ns, svc, rev)
		cfg.Timeout = 500 * time.Millisecond
		if i == 0 {
			if err := store.New(cluster.Consul).PutRevision(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			continue // its instance is routeBackend's
		}
		registerRevision(t, cfg, b.port())
	}
	setRoute(t, svc, store.RouteTarget{Revision: svc + "-00001", Percent: 50}, store.RouteTarget{Revision: rev2, Percent: 50, Tag: "b"})
	waitReady(t, g, rev2, 1)
	waitRoutes(t, g, "b-"+host(svc))

	c := h2Client(g, nil)
	const n = 400
	for i := range n {
		resp, err := c.Get("http://" + host(svc) + "/s/" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	na, nb := len(a.find("/s/")), len(b.find("/s/"))
	// 50/50 over 400 draws: 200 ± 3.5 σ (σ = 10).
	if na+nb != n || na < 165 || nb < 165 {
		t.Errorf("one HTTP/2 connection, a 50/50 split: %d and %d of %d", na, nb, n)
	}
	for range 5 {
		resp, err := c.Get("http://b-" + host(svc) + "/tagged")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := len(b.find("/tagged")); got != 5 || len(a.find("/tagged")) != 0 {
		t.Errorf("the tag's host: revision b got %d of 5, a %d", got, len(a.find("/tagged")))
	}
	start := time.Now()
	resp, err := c.Get("http://b-" + host(svc) + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != 504 || !strings.Contains(string(body), "timeout of 500ms") || took > 1200*time.Millisecond {
		t.Errorf("a request past the revision's timeout: %d %q after %v, want 504 at 500 ms", resp.StatusCode, body, took)
	}
}
