package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// tpBackend is an instance (HTTP/1.1, or h2c only) that records every traceparent value
// each request brought, by path, in order.
type tpBackend struct {
	ln  net.Listener
	mu  sync.Mutex
	got map[string][]string
}

func newTPBackend(t *testing.T, h2c bool) *tpBackend {
	t.Helper()
	b := &tpBackend{got: map[string][]string{}}
	var err error
	if b.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.got[r.URL.Path] = append([]string{}, r.Header.Values("Traceparent")...)
		b.mu.Unlock()
		if r.Header.Get("Upgrade") != "" { // the tunnel case: answer 101, then close
			c, brw, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + r.Header.Get("Upgrade") + "\r\n\r\n")
				_ = brw.Flush()
				c.Close()
			}
			return
		}
		fmt.Fprint(w, "ok")
	})}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	}
	go func() { _ = srv.Serve(b.ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

func (b *tpBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

func (b *tpBackend) values(path string) ([]string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.got[path]
	return v, ok
}

// tracedGateway routes svc to b (protocol h2c or HTTP/1.1) through a gateway whose spans
// go to the returned recorder.
func tracedGateway(t *testing.T, svc string, b *tpBackend, h2c bool, trace bool) (*gateway.Gateway, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfgMod := func(c *revmeta.Config) {
		if !h2c {
			c.Protocol = ""
		}
	}
	mod := func(c *gateway.Config) {
		if trace {
			c.TracerProvider = tp
		}
	}
	return routePorts(t, svc, cfgMod, mod, b.port()), rec
}

// spanOf is the ended gateway span of the request to path, nil if none.
func spanOf(rec *tracetest.SpanRecorder, path string) sdktrace.ReadOnlySpan {
	for _, s := range rec.Ended() {
		if s.Name() != "rouse.gateway" {
			continue
		}
		for _, a := range s.Attributes() {
			if a.Key == "url.path" && a.Value.AsString() == path {
				return s
			}
		}
	}
	return nil
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, a := range s.Attributes() {
		if a.Key == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

// rawRequest sends one HTTP/1.1 request as written over a new connection and returns
// the status.
func rawRequest(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// reference is what OTel's propagator over net/http's parsing of the same bytes takes
// from the request: the judge of which client traceparents continue a trace.
func reference(t *testing.T, raw string) (trace.SpanContext, bool) {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return trace.SpanContext{}, false
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
	return trace.SpanContextFromContext(ctx), true
}

// checkHop asserts the gateway's span for path and what the instance got: one
// traceparent naming the gateway's span, in the trace of parent when that is valid, in a
// new trace otherwise.
func checkHop(t *testing.T, b *tpBackend, rec *tracetest.SpanRecorder, path string, parent trace.SpanContext, rev string) {
	t.Helper()
	var got []string
	poll.Until(t, 5*time.Second, "the instance's record of "+path, func() error {
		var ok bool
		if got, ok = b.values(path); !ok {
			return fmt.Errorf("no request for %s", path)
		}
		return nil
	})
	if len(got) != 1 {
		t.Fatalf("%s: the instance got traceparent %q, want exactly one (the gateway's)", path, got)
	}
	sampled := !parent.IsValid() || parent.IsSampled()
	var s sdktrace.ReadOnlySpan
	if sampled { // it ends once the answer is written, a moment after the client read it
		poll.Until(t, 5*time.Second, "the gateway span of "+path, func() error {
			if s = spanOf(rec, path); s == nil {
				return fmt.Errorf("not ended")
			}
			return nil
		})
	}
	var sc trace.SpanContext
	if s != nil {
		sc = s.SpanContext()
		if want := fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags()); got[0] != want {
			t.Errorf("%s: the instance got traceparent %q, want the gateway span's %q", path, got[0], want)
		}
		if s.SpanKind() != trace.SpanKindServer || attr(s, "rouse.revision").AsString() != rev ||
			attr(s, "http.response.status_code").AsInt64() != 200 || attr(s, "rouse.instance").AsString() == "" {
			t.Errorf("%s: span kind %v, attributes %v", path, s.SpanKind(), s.Attributes())
		}
	}
	tid, sid, flags := splitTP(got[0])
	if parent.IsValid() {
		if tid != parent.TraceID().String() || sid == parent.SpanID().String() || flags != parent.TraceFlags().String() {
			t.Errorf("%s: the instance got %q, want trace %s continued (flags %s) from a new span", path, got[0], parent.TraceID(), parent.TraceFlags())
		}
		if s != nil && s.Parent().SpanID() != parent.SpanID() {
			t.Errorf("%s: the gateway span's parent is %s, want the client's %s", path, s.Parent().SpanID(), parent.SpanID())
		}
	} else if s != nil && s.Parent().IsValid() {
		t.Errorf("%s: the client's traceparent is not valid, but the gateway span has parent %v", path, s.Parent())
	}
}

func splitTP(v string) (tid, sid, flags string) {
	f := strings.Split(v, "-")
	if len(f) != 4 {
		return "", "", ""
	}
	return f[1], f[2], f[3]
}

// hostileTraceparents are client field lines (after the request line and Host) the
// gateway must read as the reference does.
var hostileTraceparents = []string{
	"",
	"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
	"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\r\n",                                                                         // not sampled
	"TRACEPARENT: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",                                                                         // name's case
	"traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01\r\n",                                                                         // upper-case hex
	"traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n",                                                                         // zero trace id
	"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01\r\n",                                                                         // zero span id
	"traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",                                                                         // version ff
	"traceparent: 01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx\r\n",                                                                      // a future version's extra field
	"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx\r\n",                                                                      // version 00 with one
	"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01\r\n",                                                                          // short trace id
	"traceparent:   00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01  \r\n",                                                                     // whitespace
	"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntraceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n", // two
	"traceparent: garbage\r\ntraceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n",                                                 // a bad first
	"Connection: traceparent\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",                                              // hop-by-hop
	"traceparent: 00-" + strings.Repeat("a", 8000) + "\r\n",                                                                                            // long
	"tracestate: rojo=00f067aa0ba902b7\r\n",                                                                                                            // tracestate alone
}

// With tracing on, every way through the gateway continues the client's trace exactly
// when OTel's propagator over net/http would, and the instance gets one traceparent: the
// gateway's span. HTTP/1.1 to an HTTP/1.1 instance, to an h2c instance, and the upgrade
// tunnel, with hostile values; HTTP/2 to both kinds of instance.
func TestTracingContinuesTraceparent(t *testing.T) {
	for _, tc := range []struct {
		name string
		h2c  bool
	}{{"to-http1", false}, {"to-h2c", true}} {
		t.Run(tc.name, func(t *testing.T) {
			svc := "trace-" + tc.name
			b := newTPBackend(t, tc.h2c)
			g, rec := tracedGateway(t, svc, b, tc.h2c, true)
			rev := svc + "-00001"
			for i, fields := range hostileTraceparents {
				path := fmt.Sprintf("/h1/%d", i)
				raw := "GET " + path + " HTTP/1.1\r\nHost: " + host(svc) + "\r\n" + fields + "Connection: close\r\n\r\n"
				want, parsed := reference(t, raw)
				status := rawRequest(t, g.PublicAddr(), raw)
				if !parsed {
					if status != 400 {
						t.Errorf("case %d: net/http refuses %q, the gateway answered %d", i, fields, status)
					}
					continue
				}
				if status != 200 {
					t.Errorf("case %d %q: status %d", i, fields, status)
					continue
				}
				checkHop(t, b, rec, path, want, rev)
			}
			// HTTP/2 from the client: the same rule through net/http's own client.
			c := clientTo(g.PublicAddr(), true)
			for i, vs := range [][]string{nil, {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
				{"garbage"}, {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-11111111111111111111111111111111-2222222222222222-01"}} {
				path := fmt.Sprintf("/h2/%d", i)
				req, _ := http.NewRequest("GET", "http://"+host(svc)+path, nil)
				req.Header["Traceparent"] = vs
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
					t.Fatalf("h2 case %d: %s %d", i, resp.Proto, resp.StatusCode)
				}
				want := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(req.Header)))
				checkHop(t, b, rec, path, want, rev)
			}
			if !tc.h2c {
				// The upgrade tunnel forwards the same head.
				raw := "GET /tunnel HTTP/1.1\r\nHost: " + host(svc) + "\r\nConnection: Upgrade\r\nUpgrade: x-test\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
				want, _ := reference(t, raw)
				if st := rawRequest(t, g.PublicAddr(), raw); st != 101 {
					t.Fatalf("upgrade: %d", st)
				}
				poll.Until(t, 5*time.Second, "the tunnel's span", func() error {
					if spanOf(rec, "/tunnel") == nil {
						return fmt.Errorf("not ended")
					}
					return nil
				})
				got, _ := b.values("/tunnel")
				if tid, _, _ := splitTP(firstOf(got)); len(got) != 1 || tid != want.TraceID().String() {
					t.Errorf("tunnel: the instance got %q, want one traceparent in trace %s", got, want.TraceID())
				}
			}
		})
	}
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// With tracing off (the default), the gateway forwards the client's traceparent lines
// untouched, every one, in order.
func TestTracingOffForwardsTraceparent(t *testing.T) {
	b := newTPBackend(t, false)
	g, rec := tracedGateway(t, "trace-off", b, false, false)
	a, c := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "garbage"
	raw := "GET /off HTTP/1.1\r\nHost: " + host("trace-off") + "\r\ntraceparent: " + a + "\r\ntraceparent: " + c + "\r\nConnection: close\r\n\r\n"
	if st := rawRequest(t, g.PublicAddr(), raw); st != 200 {
		t.Fatalf("status %d", st)
	}
	if got, _ := b.values("/off"); len(got) != 2 || got[0] != a || got[1] != c {
		t.Fatalf("the instance got %q, want both lines as sent", got)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans with tracing off", n)
	}
}

// A request held while its revision wakes has a child span "rouse.wait" as long as the
// hold, marked as a cold start, and the gateway span says so too.
func TestTracingColdStartWait(t *testing.T) {
	const svc = "trace-cold"
	rev := svc + "-00001"
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	cfg := revmeta.Defaults(ns, svc, rev)
	registerRevision(t, cfg) // no instance yet: at zero
	setRoute(t, svc, store.RouteTarget{Revision: rev, Percent: 100})
	g := startGateway(t, func(c *gateway.Config) { c.TracerProvider = tp })
	waitRoutes(t, g, host(svc))
	done := make(chan int, 1)
	go func() {
		done <- rawRequest(t, g.PublicAddr(), "GET /cold HTTP/1.1\r\nHost: "+host(svc)+"\r\nConnection: close\r\n\r\n")
	}()
	const hold = 400 * time.Millisecond
	time.Sleep(hold) // the request waits this long for an instance
	b := newTPBackend(t, false)
	registerRevision(t, cfg, b.port())
	if st := <-done; st != 200 {
		t.Fatalf("status %d", st)
	}
	var s sdktrace.ReadOnlySpan
	poll.Until(t, 5*time.Second, "the gateway span", func() error {
		if s = spanOf(rec, "/cold"); s == nil {
			return fmt.Errorf("not ended")
		}
		return nil
	})
	var wait sdktrace.ReadOnlySpan
	for _, c := range rec.Ended() {
		if c.Name() == "rouse.wait" && c.Parent().SpanID() == s.SpanContext().SpanID() {
			wait = c
		}
	}
	if wait == nil {
		t.Fatal("no rouse.wait child span")
	}
	if d := wait.EndTime().Sub(wait.StartTime()); d < hold || d > s.EndTime().Sub(s.StartTime()) {
		t.Errorf("wait span %v, want at least the %v hold and within the gateway span's %v", d, hold, s.EndTime().Sub(s.StartTime()))
	}
	if !attr(wait, "rouse.cold_start").AsBool() || !attr(s, "rouse.cold_start").AsBool() || attr(s, "rouse.wait_ms").AsInt64() < hold.Milliseconds() {
		t.Errorf("wait %v, gateway %v", wait.Attributes(), s.Attributes())
	}
	if got, _ := b.values("/cold"); len(got) != 1 || !bytes.Contains([]byte(got[0]), []byte(s.SpanContext().SpanID().String())) {
		t.Errorf("the instance got %q", got)
	}
}

// BenchmarkForwardTraced is BenchmarkForward with tracing on (every request sampled, the
// spans to a recorder): what tracing costs when it is on.
func BenchmarkForwardTraced(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	benchForward(b, func(c *gateway.Config) { c.TracerProvider = tp })
}
