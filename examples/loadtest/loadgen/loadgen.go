// Package loadgen is the load generator behind `make bench-load` and the end-to-end tests:
// an open-model HTTP client (requests start on a schedule whether or not earlier ones have
// answered, as real users do — a closed loop would slow down with the server and hide
// latency) with a bound on requests in flight, and a recorder that keeps per-second
// counts and latency percentiles.
package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Rate is the offered load, in requests per second, at a time since the run started.
type Rate func(elapsed time.Duration) float64

// Constant offers the same rate for the whole run.
func Constant(rps float64) Rate { return func(time.Duration) float64 { return rps } }

// Steps offers rates[i] during the i-th period of length step, and 0 after the last one.
func Steps(step time.Duration, rates ...float64) Rate {
	return func(el time.Duration) float64 {
		if i := int(el / step); i >= 0 && i < len(rates) {
			return rates[i]
		}
		return 0
	}
}

// Generator sends requests on a schedule.
type Generator struct {
	// Client sends the requests; its Timeout bounds each one.
	Client *http.Client
	// NewRequest builds each request.
	NewRequest func(ctx context.Context) (*http.Request, error)
	// Stop (may be nil) ends the run early once closed: no new arrivals, and the
	// requests in flight finish (a cancelled ctx cuts them off instead).
	Stop <-chan struct{}
	// MaxInFlight bounds the requests waiting for an answer. An arrival beyond it is not
	// sent and counts as shed: the client is saturated, and the recorder says so rather
	// than silently slowing the schedule down. Default 1000.
	MaxInFlight int
	// Recorder receives every arrival and outcome. Required.
	Recorder *Recorder
	// Observe, if set, sees each response (e.g. which revision answered) before the rest
	// of its body is read and discarded; it may read the body. It must be safe for
	// concurrent use.
	Observe func(resp *http.Response)
}

// Run offers rate(elapsed) requests per second, evenly spaced, for d (or until ctx ends),
// then waits for the requests in flight.
func (g *Generator) Run(ctx context.Context, rate Rate, d time.Duration) {
	maxIn := g.MaxInFlight
	if maxIn <= 0 {
		maxIn = 1000
	}
	sem := make(chan struct{}, maxIn)
	var wg sync.WaitGroup
	defer wg.Wait()
	start := time.Now()
	next := start
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		el := next.Sub(start)
		if el >= d {
			return
		}
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-g.Stop:
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		r := rate(el)
		if r <= 0 {
			next = next.Add(10 * time.Millisecond) // idle: look again in a moment
			continue
		}
		at := next
		g.Recorder.Offer(at)
		select {
		case sem <- struct{}{}:
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				g.one(ctx, at)
			}()
		default:
			g.Recorder.Shed(at)
		}
		// Behind schedule (a late timer, a busy machine), the missed arrivals still happen,
		// back to back, as an open model requires.
		next = next.Add(time.Duration(float64(time.Second) / r))
	}
}

// one sends a request scheduled at at. Latency runs from the scheduled time, so time
// spent waiting for the generator itself is not hidden (no coordinated omission).
func (g *Generator) one(ctx context.Context, at time.Time) {
	req, err := g.NewRequest(ctx)
	if err != nil {
		g.Recorder.Done(at, time.Since(at), 0, err)
		return
	}
	resp, err := g.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			g.Recorder.Done(at, time.Since(at), 0, context.Canceled)
			return
		}
		g.Recorder.Done(at, time.Since(at), 0, err)
		return
	}
	if g.Observe != nil {
		g.Observe(resp)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	g.Recorder.Done(at, time.Since(at), resp.StatusCode, err)
}

// Client returns an HTTP client for load on one address: every connection goes to addr
// whatever the URL's host (so service URLs such as http://hello.default.localhost work
// without DNS), no proxy from the environment, and enough idle connections to reuse them
// at the given concurrency.
func Client(addr string, conns int, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     60 * time.Second,
			DisableCompression:  true,
		},
	}
}

// Recorder counts arrivals and outcomes per second since its start. It is safe for
// concurrent use.
type Recorder struct {
	start time.Time

	mu     sync.Mutex
	secs   []*bucket
	errors map[string]int // distinct error texts, for the report
}

type bucket struct {
	offered, shed      int
	ok, failed         int
	completed          int // 2xx answers that arrived in this second
	codes              map[int]int
	latencies          []time.Duration // of 2xx answers, by the second they were sent
	transport, aborted int
}

// NewRecorder starts the clock at start.
func NewRecorder(start time.Time) *Recorder {
	return &Recorder{start: start, errors: map[string]int{}}
}

// Start is the time second 0 begins.
func (r *Recorder) Start() time.Time { return r.start }

func (r *Recorder) bucketLocked(t time.Time) *bucket {
	i := int(t.Sub(r.start) / time.Second)
	if i < 0 {
		i = 0
	}
	for len(r.secs) <= i {
		r.secs = append(r.secs, &bucket{codes: map[int]int{}})
	}
	return r.secs[i]
}

// Offer records an arrival at at.
func (r *Recorder) Offer(at time.Time) {
	r.mu.Lock()
	r.bucketLocked(at).offered++
	r.mu.Unlock()
}

// Shed records an arrival the generator could not send (too many in flight).
func (r *Recorder) Shed(at time.Time) {
	r.mu.Lock()
	r.bucketLocked(at).shed++
	r.mu.Unlock()
}

// Done records the outcome of a request sent at at: an HTTP status, or err for a request
// that got no answer (code 0). context.Canceled marks requests cut off by the end of
// the run; they count as aborted, not as failures of the server.
func (r *Recorder) Done(at time.Time, latency time.Duration, code int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bucketLocked(at)
	switch {
	case err == context.Canceled:
		b.aborted++
	case err != nil && code == 0:
		b.failed++
		b.transport++
		r.noteLocked(err.Error())
	case code >= 200 && code < 300 && err == nil:
		b.ok++
		b.latencies = append(b.latencies, latency)
		r.bucketLocked(at.Add(latency)).completed++
	default:
		b.failed++
		b.codes[code]++
		if err != nil {
			r.noteLocked(fmt.Sprintf("HTTP %d, then reading the body: %v", code, err))
		} else {
			r.noteLocked(fmt.Sprintf("HTTP %d", code))
		}
	}
}

func (r *Recorder) noteLocked(s string) {
	if _, ok := r.errors[s]; ok || len(r.errors) < 20 {
		r.errors[s]++
	}
}

// Second is one second of a run.
type Second struct {
	T        int // seconds since the start
	Offered  int // arrivals scheduled
	Shed     int // arrivals not sent: the generator was at MaxInFlight
	OK       int // 2xx answers to requests sent this second
	Errors   int // non-2xx answers and requests without an answer, sent this second
	Achieved int // 2xx answers received this second
	Aborted  int // cut off by the end of the run
	P50, P95 time.Duration
	P99, Max time.Duration
}

// Seconds summarises every second recorded so far.
func (r *Recorder) Seconds() []Second {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Second, len(r.secs))
	for i, b := range r.secs {
		lat := sortedCopy(b.latencies)
		out[i] = Second{T: i, Offered: b.offered, Shed: b.shed, OK: b.ok, Errors: b.failed,
			Achieved: b.completed, Aborted: b.aborted,
			P50: Percentile(lat, 50), P95: Percentile(lat, 95), P99: Percentile(lat, 99), Max: Percentile(lat, 100)}
	}
	return out
}

// Totals summarise a span of seconds.
type Totals struct {
	Offered, Shed, OK, Errors, Aborted int
	Codes                              map[int]int // non-2xx statuses
	Transport                          int         // requests that got no answer
	P50, P95, P99, Max                 time.Duration
}

// Failures are everything a user would have noticed: errors and requests not even sent.
func (t Totals) Failures() int { return t.Errors + t.Shed }

// Totals summarises the requests sent in seconds [from, to); to < 0 means up to the end.
func (r *Recorder) Totals(from, to int) Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	if to < 0 || to > len(r.secs) {
		to = len(r.secs)
	}
	t := Totals{Codes: map[int]int{}}
	var lat []time.Duration
	for i := max(from, 0); i < to; i++ {
		b := r.secs[i]
		t.Offered += b.offered
		t.Shed += b.shed
		t.OK += b.ok
		t.Errors += b.failed
		t.Aborted += b.aborted
		t.Transport += b.transport
		for c, n := range b.codes {
			t.Codes[c] += n
		}
		lat = append(lat, b.latencies...)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.P50, t.P95, t.P99, t.Max = Percentile(lat, 50), Percentile(lat, 95), Percentile(lat, 99), Percentile(lat, 100)
	return t
}

// ErrorTexts are the distinct error texts seen (at most 20) with their counts.
func (r *Recorder) ErrorTexts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.errors))
	for k, v := range r.errors {
		out[k] = v
	}
	return out
}

func sortedCopy(d []time.Duration) []time.Duration {
	c := append([]time.Duration(nil), d...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

// Percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of sorted; 0 when empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// Nearest rank: the smallest value with at least p % of the samples at or below it.
	k := int(math.Ceil(float64(n)*p/100)) - 1
	k = min(max(k, 0), n-1)
	return sorted[k]
}
