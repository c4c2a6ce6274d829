package console

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/store"
)

// fakeReader is the control plane as a test sets it.
type fakeReader struct {
	mu       sync.Mutex
	detail   control.ServiceDetail
	gateway  string // admin addr
	scaler   string
	listErr  error
	descErr  error
	failures []store.Failure
}

func (f *fakeReader) List(context.Context, string) ([]control.ServiceSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	return []control.ServiceSummary{f.detail.ServiceSummary}, nil
}

func (f *fakeReader) Describe(context.Context, string, string) (*control.ServiceDetail, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.descErr != nil {
		return nil, f.descErr
	}
	d := f.detail
	d.Revisions = append([]control.RevisionInfo(nil), f.detail.Revisions...)
	return &d, nil
}

func (f *fakeReader) Failures(context.Context, string) ([]store.Failure, error) {
	return f.failures, nil
}

func (f *fakeReader) Gateways(context.Context) ([]control.Daemon, error) {
	return []control.Daemon{{ID: "gw-1", AdminAddr: f.gateway, Passing: true, RoutesIndex: 40}}, nil
}

func (f *fakeReader) Scalers(context.Context) ([]control.Daemon, error) {
	return []control.Daemon{{ID: "sc-1", AdminAddr: f.scaler, Passing: true}}, nil
}

func (f *fakeReader) JournalIndex(context.Context) (uint64, error) { return 42, nil }

// fakeAdmin serves a gateway's /gauges and /metrics and a scaler's /healthz and /decisions
// from what the test sets.
type fakeAdmin struct {
	mu        sync.Mutex
	requests  uint64  // requests_total of hello-00002
	latencyLE []int64 // cumulative counts for buckets .01 .1 1
	decision  string
}

func (a *fakeAdmin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/gauges", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		fmt.Fprintf(w, "rouse-gauges 1 gw-1 1000\ndefault/hello-00002 3 1 0 %d 2\ndefault/hello-00001 0 0 2 0 0\n", a.requests)
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		l := `namespace="default",revision="hello-00002",service="hello"`
		fmt.Fprintf(w, "# TYPE rouse_gateway_request_duration_seconds histogram\n")
		for i, le := range []string{"0.01", "0.1", "1"} {
			fmt.Fprintf(w, "rouse_gateway_request_duration_seconds_bucket{%s,le=%q} %d\n", l, le, a.latencyLE[i])
		}
		n := a.latencyLE[2]
		fmt.Fprintf(w, "rouse_gateway_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", l, n)
		fmt.Fprintf(w, "rouse_gateway_request_duration_seconds_sum{%s} 1\nrouse_gateway_request_duration_seconds_count{%s} %d\n", l, l, n)
		l1 := `namespace="default",revision="hello-00001",service="hello"`
		fmt.Fprintf(w, "# TYPE rouse_gateway_cold_start_wait_seconds histogram\n")
		fmt.Fprintf(w, "rouse_gateway_cold_start_wait_seconds_bucket{%s,le=\"0.2\"} 3\nrouse_gateway_cold_start_wait_seconds_bucket{%s,le=\"+Inf\"} 4\n", l1, l1)
		fmt.Fprintf(w, "rouse_gateway_cold_start_wait_seconds_sum{%s} 1.2\nrouse_gateway_cold_start_wait_seconds_count{%s} 4\n", l1, l1)
		fmt.Fprintf(w, "# TYPE rouse_gateway_requests_total counter\nrouse_gateway_requests_total{%s,code=\"200\"} %d\nrouse_gateway_requests_total{%s,code=\"503\"} %d\n", l, a.requests, l, a.requests/10)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok sc-1 leader") })
	mux.HandleFunc("/decisions", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		fmt.Fprintf(w, "REVISION  READY  DESIRED  REASON  PANIC  STABLE  PANIC-WINDOW  TARGET  EBC\n%s\n", a.decision)
	})
	return mux
}

func helloDetail() control.ServiceDetail {
	return control.ServiceDetail{
		ServiceSummary: control.ServiceSummary{Namespace: "default", Name: "hello", URL: "http://hello.default.localhost",
			Latest: "hello-00002", LatestReady: "hello-00002", Ready: control.True,
			Route: []store.RouteTarget{{Revision: "hello-00002", Percent: 90}, {Revision: "hello-00001", Percent: 10, Tag: "old"}}},
		Tags: []control.TagInfo{{Tag: "old", Revision: "hello-00001", URL: "http://old-hello.default.localhost"}},
		Revisions: []control.RevisionInfo{
			{Name: "hello-00002", Generation: 2, Status: control.RevisionReady, Percent: 90, Ready: 2, Desired: 2},
			{Name: "hello-00001", Generation: 1, Status: control.RevisionReady, Percent: 10, Tags: []string{"old"}, Ready: 0, Desired: 1},
		},
		Conditions: []control.Condition{{Type: "Ready", Status: control.True}},
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// TestSamplesAndPages: three samples on a stepped clock against a fake control plane and
// fake admin listeners; the pages show the service, its split and tags, each revision's
// instances, requests per second from the gateway's counter, the latency quantile from its
// histogram, held requests, cold-start waits, the scaler's decisions (changes only) and
// the failure record.
func TestSamplesAndPages(t *testing.T) {
	adm := &fakeAdmin{latencyLE: []int64{0, 0, 0}, decision: "default/hello-00002  2  2  hold  false  3.0  3.0  100×70%  200"}
	srv := httptest.NewServer(adm.handler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	fr := &fakeReader{detail: helloDetail(), gateway: addr, scaler: addr,
		failures: []store.Failure{{Namespace: "default", Revision: "hello-00001", Reason: "Terminated: Exit Code: 3; stderr: boom", At: time.Unix(900, 0), Attempt: 2}}}
	clk := clock.NewFake(time.Unix(1000, 0))
	c, err := newConsole(Config{Clock: clk, Namespace: "default"}, fr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Sample(ctx)
	clk.Step(2 * time.Second)
	adm.mu.Lock()
	adm.requests, adm.latencyLE = 100, []int64{90, 95, 100} // 100 requests in 2 s: 50/s; p50 in the first bucket
	adm.decision = "default/hello-00002  2  3  scale_up  false  7.5  8.0  100×70%  200"
	adm.mu.Unlock()
	c.Sample(ctx)
	clk.Step(2 * time.Second)
	c.Sample(ctx) // same decision: not a new row

	s := c.hist.revs[revKey{"default", "hello-00002"}]
	if s == nil || len(s.points) != 3 {
		t.Fatalf("series of hello-00002: %+v", s)
	}
	if p := s.points[1]; p.rps != 50 || p.inFlight != 3 || p.queued != 1 || math.Abs(p.p50-0.01*50/90) > 1e-9 || p.errRPS != 5 {
		t.Errorf("second sample: rps %v in flight %d queued %d p50 %v 5xx/s %v; want 50, 3, 1, %v, 5", p.rps, p.inFlight, p.queued, p.p50, p.errRPS, 0.01*50/90)
	}
	if !math.IsNaN(s.points[0].rps) || s.points[2].rps != 0 {
		t.Errorf("rps: first %v (want NaN: no earlier counter), third %v (want 0)", s.points[0].rps, s.points[2].rps)
	}
	if len(s.decisions) != 2 || s.decisions[1].Reason != "scale_up" || s.decisions[1].Desired != 3 {
		t.Errorf("decisions: %+v", s.decisions)
	}

	code, body := get(t, c.Handler(), "/")
	if code != 200 {
		t.Fatalf("/: %d", code)
	}
	for _, want := range []string{`data-service="default/hello"`, `data-traffic="hello-00002" data-percent="90"`,
		`data-traffic="hello-00001" data-percent="10"`, `data-tag="old" data-tag-revision="hello-00001"`,
		`<td data-field="instances">2/3</td>`, `<td data-field="rps">0</td>`, `data-failure="default/hello-00001"`,
		"Terminated: Exit Code: 3; stderr: boom", `data-gateway="gw-1"`, `behind 42`, `data-scaler="sc-1"`, "<b>leader</b>"} {
		if !strings.Contains(body, want) {
			t.Errorf("/ lacks %s", want)
		}
	}
	code, body = get(t, c.Handler(), "/services/default/hello?fragment=1")
	if code != 200 || strings.Contains(body, "<html") {
		t.Fatalf("fragment: %d, whole page %v", code, strings.Contains(body, "<html"))
	}
	for _, want := range []string{`data-revision="hello-00002"`, `data-chart="hello-00002-instances"`, `data-chart="hello-00002-latency"`,
		`data-chart="hello-00001-cold"`, "4 waits, p50 133ms", `<span data-field="held">2</span>`,
		`data-field="decision">scale_up`, `data-field="decision">hold`} {
		if !strings.Contains(body, want) {
			t.Errorf("service page lacks %s", want)
		}
	}
	if code, _ := get(t, c.Handler(), "/services/default/nope"); code != 404 {
		t.Errorf("unknown service: %d, want 404", code)
	}
	if code, body := get(t, c.Handler(), "/static/console.js"); code != 200 || !strings.Contains(body, "fragment=1") {
		t.Errorf("/static/console.js: %d", code)
	}

	// History is bounded: after History has passed, only the recent points are left.
	for range 310 {
		clk.Step(2 * time.Second)
		c.Sample(ctx)
	}
	if n := len(c.hist.revs[revKey{"default", "hello-00002"}].points); n > 301 {
		t.Errorf("%d points kept, want ≤ 301 (10 min at 2 s)", n)
	}
}

// TestDeniedReadsAreShown: a read the token may not make is on the page as a denial naming
// the capability and the token variable, and the rest of the page still renders.
func TestDeniedReadsAreShown(t *testing.T) {
	fr := &fakeReader{detail: helloDetail(), gateway: "127.0.0.1:1", scaler: "127.0.0.1:1",
		descErr: &control.PermissionError{System: "nomad", Capability: "read-job", Resource: "namespace default", TokenVar: "NOMAD_TOKEN", NoToken: true}}
	c, err := newConsole(Config{Clock: clock.NewFake(time.Unix(1000, 0)), Namespace: "default"}, fr)
	if err != nil {
		t.Fatal(err)
	}
	c.Sample(context.Background())
	_, body := get(t, c.Handler(), "/")
	for _, want := range []string{"Access denied", "NOMAD_TOKEN", "this token needs read-job on namespace default (NOMAD_TOKEN is not set)",
		`data-problem="describe default/hello"`, `data-service="default/hello"`, `<td data-field="instances">–</td>`} {
		if !strings.Contains(body, want) {
			t.Errorf("/ lacks %s", want)
		}
	}
	fr.mu.Lock()
	fr.listErr = &control.PermissionError{System: "consul", Capability: "key:read", Resource: "rouse/services/default/", TokenVar: "CONSUL_HTTP_TOKEN"}
	fr.mu.Unlock()
	c.Sample(context.Background())
	_, body = get(t, c.Handler(), "/")
	if !strings.Contains(body, "this token needs key:read on rouse/services/default/ (CONSUL_HTTP_TOKEN)") || strings.Contains(body, "rouse apply -f") {
		t.Errorf("a denied list is not shown as one:\n%s", body)
	}
}

func TestQuantile(t *testing.T) {
	h := histogram{bounds: []float64{1, 2, 4}, counts: []float64{10, 10, 20}, count: 20}
	for _, c := range []struct{ q, want float64 }{{0.5, 1}, {0.25, 0.5}, {0.75, 3}, {1, 4}} {
		if got := quantile(c.q, h); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%v = %v, want %v", c.q, got, c.want)
		}
	}
	if !math.IsNaN(quantile(0.5, histogram{bounds: []float64{1}, counts: []float64{0}})) {
		t.Error("empty histogram: want NaN")
	}
	h.count = 30 // 10 above the last bound: the highest finite bound, as histogram_quantile
	if got := quantile(0.99, h); got != 4 {
		t.Errorf("q0.99 in +Inf = %v, want 4", got)
	}
}

func TestParseDecisions(t *testing.T) {
	in := "REVISION  READY  DESIRED  REASON  PANIC  STABLE  PANIC-WINDOW  TARGET  EBC\n" +
		"default/a-00001  1  4  panic  true  12.5  30.0  100×70%  -20\n" +
		"ns2/b  0  0  to_zero  false  0.0  0.0  10×70%  200\n"
	ds, err := parseDecisions(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	a := ds[revKey{"default", "a-00001"}]
	if len(ds) != 2 || a.Desired != 4 || !a.Panic || a.Reason != "panic" || a.Stable != 12.5 || a.Target != "100×70%" {
		t.Errorf("%+v", ds)
	}
	if _, err := parseDecisions(strings.NewReader("H\nx 1 2\n")); err == nil {
		t.Error("short line: want an error")
	}
}
