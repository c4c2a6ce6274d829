package loadgen

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 100, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{ms(hundred...), 95, 95 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
		{ms(hundred...), 0.1, 1 * time.Millisecond},
	} {
		if got := Percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
		}
	}
}

func TestSteps(t *testing.T) {
	r := Steps(10*time.Second, 300, 600, 900)
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{0, 300}, {9999 * time.Millisecond, 300}, {10 * time.Second, 600}, {29 * time.Second, 900}, {30 * time.Second, 0}, {-time.Second, 300}} {
		if got := r(tc.at); got != tc.want {
			t.Errorf("Steps(...)(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
}

// The recorder files each request under the second it was sent in, and each 2xx answer
// under the second it arrived in (achieved rate).
func TestRecorderSeconds(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := NewRecorder(t0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// The last of these (sent at 900 ms, 100 ms) is answered in second 1.
	for i := 0; i < 10; i++ {
		r.Offer(at(i * 100))
		r.Done(at(i*100), time.Duration(i+1)*10*time.Millisecond, 200, nil)
	}
	r.Offer(at(1500))
	r.Done(at(1500), 700*time.Millisecond, 200, nil) // answered in second 2
	r.Offer(at(1600))
	r.Done(at(1600), time.Millisecond, 503, nil)
	r.Offer(at(1700))
	r.Done(at(1700), time.Millisecond, 0, errors.New("connection reset"))
	r.Offer(at(1800))
	r.Shed(at(1800))
	r.Offer(at(1900))
	r.Done(at(1900), time.Millisecond, 0, context.Canceled)

	s := r.Seconds()
	if len(s) != 3 {
		t.Fatalf("got %d seconds, want 3: %+v", len(s), s)
	}
	if s[0].Offered != 10 || s[0].OK != 10 || s[0].Errors != 0 || s[0].Achieved != 9 {
		t.Errorf("second 0 = %+v", s[0])
	}
	if s[0].P50 != 50*time.Millisecond || s[0].P95 != 100*time.Millisecond || s[0].Max != 100*time.Millisecond {
		t.Errorf("second 0 latencies p50 %v p95 %v max %v", s[0].P50, s[0].P95, s[0].Max)
	}
	if s[1].Offered != 5 || s[1].OK != 1 || s[1].Errors != 2 || s[1].Shed != 1 || s[1].Aborted != 1 || s[1].Achieved != 1 {
		t.Errorf("second 1 = %+v", s[1])
	}
	if s[2].Achieved != 1 || s[2].Offered != 0 {
		t.Errorf("second 2 = %+v", s[2])
	}
	tot := r.Totals(0, -1)
	if tot.Offered != 15 || tot.OK != 11 || tot.Errors != 2 || tot.Shed != 1 || tot.Transport != 1 || tot.Codes[503] != 1 || tot.Failures() != 3 {
		t.Errorf("totals = %+v", tot)
	}
	if tot.Max != 700*time.Millisecond {
		t.Errorf("max = %v", tot.Max)
	}
	if only1 := r.Totals(1, 2); only1.Offered != 5 || only1.OK != 1 {
		t.Errorf("totals of second 1 = %+v", only1)
	}
	texts := r.ErrorTexts()
	if texts["HTTP 503"] != 1 || texts["connection reset"] != 1 {
		t.Errorf("error texts = %v", texts)
	}
}

func TestGeneratorOpenModel(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Host != "svc.default.localhost" {
			http.Error(w, "wrong host "+r.Host, http.StatusNotFound)
			return
		}
		w.Header().Set("X-Revision", "svc-00001")
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	rec := NewRecorder(time.Now())
	var seen atomic.Int64
	g := &Generator{
		Client: Client(strings.TrimPrefix(srv.URL, "http://"), 64, 5*time.Second),
		NewRequest: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, "http://svc.default.localhost/", nil)
		},
		Recorder: rec,
		Observe: func(resp *http.Response) {
			if resp.Header.Get("X-Revision") == "svc-00001" {
				seen.Add(1)
			}
		},
	}
	g.Run(context.Background(), Constant(200), time.Second)
	tot := rec.Totals(0, -1)
	// Evenly spaced arrivals from t=0: exactly 200 in one second.
	if tot.Offered != 200 {
		t.Errorf("offered %d, want 200", tot.Offered)
	}
	if tot.OK != tot.Offered || tot.Failures() != 0 || int(hits.Load()) != tot.OK || int(seen.Load()) != tot.OK {
		t.Errorf("totals %+v, server hits %d, observed %d", tot, hits.Load(), seen.Load())
	}
}

// A server slower than the schedule does not slow the schedule: arrivals beyond
// MaxInFlight are shed and counted.
func TestGeneratorSheds(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	rec := NewRecorder(time.Now())
	g := &Generator{
		Client: Client(strings.TrimPrefix(srv.URL, "http://"), 8, 5*time.Second),
		NewRequest: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		},
		MaxInFlight: 4,
		Recorder:    rec,
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Let the run end while requests are still stuck, then free them.
		time.Sleep(600 * time.Millisecond)
		cancel()
	}()
	g.Run(ctx, Constant(100), 500*time.Millisecond)
	tot := rec.Totals(0, -1)
	if tot.Offered != 50 || tot.Shed != 46 || tot.Aborted != 4 {
		t.Errorf("totals %+v: want 50 offered, 46 shed, 4 aborted", tot)
	}
}

func TestGeneratorCountsErrors(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	rec := NewRecorder(time.Now())
	g := &Generator{
		Client: Client(strings.TrimPrefix(srv.URL, "http://"), 8, 5*time.Second),
		NewRequest: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		},
		Recorder: rec,
	}
	g.Run(context.Background(), Constant(100), 200*time.Millisecond)
	tot := rec.Totals(0, -1)
	if tot.Offered != 20 || tot.OK != 10 || tot.Codes[503] != 10 {
		t.Errorf("totals %+v", tot)
	}
}

// Closing Stop ends the schedule early but lets requests in flight finish: they count as
// answered, not aborted.
func TestGeneratorStopLetsInFlightFinish(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	stop := make(chan struct{})
	rec := NewRecorder(time.Now())
	g := &Generator{Client: srv.Client(), Recorder: rec, Stop: stop,
		NewRequest: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		}}
	done := make(chan struct{})
	start := time.Now()
	go func() { g.Run(context.Background(), Constant(100), time.Minute); close(done) }()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	select {
	case <-done:
		t.Fatal("Run returned with requests in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-done
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Run took %v after Stop", took)
	}
	tot := rec.Totals(0, 1<<30)
	if tot.OK < 10 || tot.Aborted != 0 || tot.Errors != 0 {
		t.Fatalf("after Stop: %+v, want ≥10 answered, none aborted or failed", tot)
	}
}
