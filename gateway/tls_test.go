package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/testpki"
)

// testPKI is a CA of the test's own and a server certificate it signed for the names.
type testPKI struct {
	pool *x509.CertPool
	cert tls.Certificate
}

func newTestPKI(t *testing.T, names ...string) testPKI {
	ca := testpki.NewCA(t)
	return testPKI{pool: ca.Pool, cert: ca.Issue(t, names...).TLS}
}

func (p testPKI) withTLS(redirect bool) func(*gateway.Config) {
	return func(c *gateway.Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{p.cert}}
		if redirect {
			c.RedirectAddr = "127.0.0.1:0"
		}
	}
}

// An https request is routed by Host like any other, reaches the instance as plain
// HTTP/1.1 with X-Forwarded-Proto: https, and the listener speaks TLS 1.2 or later with
// ALPN http/1.1 when the client offers only that (h2 is tested in h2_test.go).
func TestTLSServesAndForwards(t *testing.T) {
	const svc = "tls-basic"
	pki := newTestPKI(t, "*."+ns+".localhost")
	be := newRecBackend(t, serveEach(echoTarget))
	g := routeBackend(t, svc, be, pki.withTLS(false))

	d := &net.Dialer{Timeout: 5 * time.Second}
	var state tls.ConnectionState
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, g.PublicAddr())
		},
		TLSClientConfig: &tls.Config{RootCAs: pki.pool, NextProtos: []string{"http/1.1"}, VerifyConnection: func(cs tls.ConnectionState) error { state = cs; return nil }},
	}}
	for i := range 3 { // one kept-alive connection
		resp, err := c.Get(fmt.Sprintf("https://%s/x/%d?q=1", host(svc), i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprintf("/x/%d?q=1", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if state.Version < tls.VersionTLS12 || state.NegotiatedProtocol != "http/1.1" || state.ServerName != host(svc) {
		t.Errorf("TLS version %x, ALPN %q, SNI %q", state.Version, state.NegotiatedProtocol, state.ServerName)
	}
	for i, r := range be.requests() {
		if p := r.values("X-Forwarded-Proto"); !slices.Equal(p, []string{"https"}) {
			t.Errorf("request %d: X-Forwarded-Proto %q, want https", i, p)
		}
		if f := r.values("X-Forwarded-For"); !slices.Equal(f, []string{"127.0.0.1"}) {
			t.Errorf("request %d: X-Forwarded-For %q", i, f)
		}
	}
	if n := len(be.requests()); n != 3 {
		t.Errorf("the instance got %d requests, want 3", n)
	}

	// TLS 1.1 is refused: the handshake fails.
	old, err := tls.DialWithDialer(d, "tcp", g.PublicAddr(), &tls.Config{RootCAs: pki.pool, ServerName: host(svc), MaxVersion: tls.VersionTLS11})
	if err == nil {
		old.Close()
		t.Error("a TLS 1.1 client completed a handshake")
	}
	// Plain HTTP on the TLS port gets no HTTP answer.
	if a := oneShot(g.PublicAddr(), "GET / HTTP/1.1\r\nHost: "+host(svc)+"\r\n\r\n", "GET"); a.err == nil && a.status != 400 {
		t.Errorf("plain HTTP on the TLS listener: %s", a)
	}
}

// Pipelined requests with bodies crossing the read buffer stay in order and whole over
// TLS (finding 1 of the hostile-input trial, on the TLS path).
func TestTLSPipelinedBodies(t *testing.T) {
	const svc, n = "tls-pipe", 20
	pki := newTestPKI(t, "*."+ns+".localhost")
	be := newRecBackend(t, serveEach(func(c *recConn, r *recReq) bool {
		return c.write(okResponse(r.Target+" "+bodyID.FindString(string(r.Body)))) == nil
	}))
	g := routeBackend(t, svc, be, pki.withTLS(false))
	bodies := make([]string, n)
	var all strings.Builder
	for i := range bodies {
		bodies[i] = padX(fmt.Sprintf("body-%02d|", i), 7000)
		fmt.Fprintf(&all, "POST /pipe/%02d HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", i, host(svc), len(bodies[i]), bodies[i])
	}
	checkPipeline(t, proxySide{"rouse over TLS", "tls://" + g.PublicAddr(), be}, all.String(), bodies)
}

// An attacker's instance that writes unsolicited responses never hands them to another
// client over TLS either (finding 2, on the TLS path).
func TestTLSResponseQueuePoisoning(t *testing.T) {
	const svc = "tls-poison"
	pki := newTestPKI(t, "*."+ns+".localhost")
	q := &quietGate{}
	be := newRecBackend(t, poisonScript(q))
	g := routeBackend(t, svc, be, pki.withTLS(false))
	triggers, served, mixups, failed, examples := poisonRace("tls://"+g.PublicAddr(), host(svc), q, 3*time.Second)
	poisons := be.event("extra")
	t.Logf("%d triggers, %d unsolicited responses written, %d innocent requests", triggers, poisons, served)
	if mixups > 0 || failed > 0 {
		t.Errorf("of %d innocent requests, %d got another response's body and %d failed, e.g.\n%s", served, mixups, failed, strings.Join(examples, "\n"))
	}
	if served < 50 || poisons < 5 {
		t.Errorf("the race barely ran: %d innocent requests, %d unsolicited responses", served, poisons)
	}
}

// The redirect listener answers every request 308 to the same host and target over
// https, on the TLS listener's port. net/http judges the bytes: whatever the gateway
// redirects, a net/http server accepts and sends to the same Location; what net/http
// refuses, the gateway refuses too (it may refuse more: its rules are stricter).
func TestRedirectToHTTPS(t *testing.T) {
	pki := newTestPKI(t, "*."+ns+".localhost")
	be := newRecBackend(t, serveEach(echoTarget))
	g := routeBackend(t, "tls-redirect", be, pki.withTLS(true))
	_, tlsPort, _ := net.SplitHostPort(g.PublicAddr())
	ref := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Host
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
			if strings.Contains(h, ":") {
				h = "[" + h + "]"
			}
		}
		w.Header().Set("Location", "https://"+h+":"+tlsPort+r.URL.RequestURI())
		w.WriteHeader(http.StatusPermanentRedirect)
	}))
	defer ref.Close()
	refAddr := strings.TrimPrefix(ref.URL, "http://")

	h := host("tls-redirect")
	for _, tc := range []struct{ name, req, method string }{
		{"plain", "GET /a/b?c=d&e HTTP/1.1\r\nHost: " + h + "\r\n\r\n", "GET"},
		{"host with port", "GET / HTTP/1.1\r\nHost: " + h + ":8080\r\n\r\n", "GET"},
		{"unknown host", "GET /x HTTP/1.1\r\nHost: nowhere.example\r\n\r\n", "GET"},
		{"POST with body", "POST /form HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 5\r\n\r\nhello", "POST"},
		{"HEAD", "HEAD /h HTTP/1.1\r\nHost: " + h + "\r\n\r\n", "HEAD"},
		{"absolute form", "GET http://" + h + "/abs?x HTTP/1.1\r\nHost: evil.example\r\n\r\n", "GET"},
		{"IPv6 literal", "GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "GET"},
		{"userinfo in host", "GET / HTTP/1.1\r\nHost: a@" + h + "\r\n\r\n", "GET"},
		{"two hosts", "GET / HTTP/1.1\r\nHost: " + h + "\r\nHost: evil.example\r\n\r\n", "GET"},
		{"space in host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "GET"},
		{"CR in target", "GET /a\rLocation:x HTTP/1.1\r\nHost: " + h + "\r\n\r\n", "GET"},
		{"no host, HTTP/1.0", "GET /old HTTP/1.0\r\n\r\n", "GET"},
		{"bare LF", "GET /lf HTTP/1.1\nHost: " + h + "\n\n", "GET"},
		{"encoded path", "GET /%0d%0aSet-Cookie:x HTTP/1.1\r\nHost: " + h + "\r\n\r\n", "GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := oneShot(g.RedirectAddr(), tc.req, tc.method)
			want := oneShot(refAddr, tc.req, tc.method)
			t.Logf("rouse: %s; net/http: %s", got, want)
			if got.err != nil {
				// A head that never ends in CRLF CRLF (bare LFs) is not a head to the
				// gateway: it waits for the rest and times out. Not redirected either.
				if !isTimeoutErr(got.err) {
					t.Fatalf("no answer: %v", got.err)
				}
				return
			}
			switch got.status {
			case 308:
				if want.status != 308 {
					t.Fatalf("rouse redirects what net/http answers %d", want.status)
				}
				if l, wl := got.header.Get("Location"), want.header.Get("Location"); l != wl {
					t.Fatalf("Location %q, net/http %q", l, wl)
				}
				if tc.method == "HEAD" && got.body != "" {
					t.Fatalf("a HEAD answer with a body %q", got.body)
				}
			case 400:
				// Stricter than net/http is allowed; more lenient is not (checked above).
			default:
				t.Fatalf("status %d", got.status)
			}
		})
	}
	if n := len(be.requests()); n != 0 {
		t.Errorf("the redirect listener forwarded %d requests to the instance", n)
	}
}
