package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/internal/store"
)

// gatewayAddrs are the public addresses of every gateway started so far, dead ones too:
// the clients' dialer falls through a refused one as a client of a DNS name with several
// addresses (or an L4 balancer) does.
func (p *platform) gatewayAddrs() []string {
	var out []string
	for _, g := range p.gateways {
		out = append(out, g.PublicAddr)
	}
	return out
}

// client sends each new connection to the next gateway in turn, and to the one after it
// when that refuses.
func (p *platform) client(timeout time.Duration) *http.Client {
	var next atomic.Uint64
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				addrs := p.gatewayAddrs()
				first := int(next.Add(1))
				var err error
				for i := range addrs {
					var c net.Conn
					if c, err = d.DialContext(ctx, network, addrs[(first+i)%len(addrs)]); err == nil {
						return c, nil
					}
				}
				return nil, err
			},
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
	}
}

// stream is the load on one service: an open-model generator at rate, each request
// ?sleep=sleepMS.
type stream struct {
	svc     string
	rate    loadgen.Rate
	sleepMS int
}

// load is streams running until stopped.
type load struct {
	start time.Time
	recs  map[string]*loadgen.Recorder
	wg    sync.WaitGroup
	stop  chan struct{}
	once  sync.Once

	mu     sync.Mutex
	bodies map[string]int // the gateway's answers to the requests that failed, by text
}

// observe keeps the body of a non-2xx answer (the gateway says why), a few distinct ones.
func (l *load) observe(resp *http.Response) {
	if resp.StatusCode < 300 {
		return
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bodies == nil {
		l.bodies = map[string]int{}
	}
	if k := fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b))); l.bodies[k] > 0 || len(l.bodies) < 10 {
		l.bodies[k]++
	}
}

// maxLoad bounds every load, whatever happens to the test.
const maxLoad = 5 * time.Minute

// run starts every stream; finish ends them.
func (p *platform) run(streams ...stream) *load {
	l := &load{start: time.Now(), recs: map[string]*loadgen.Recorder{}, stop: make(chan struct{})}
	cl := p.client(90 * time.Second)
	for _, s := range streams {
		rec := loadgen.NewRecorder(l.start)
		l.recs[s.svc] = rec
		url := fmt.Sprintf("http://%s.default.localhost/?sleep=%d", s.svc, s.sleepMS)
		g := &loadgen.Generator{Client: cl, MaxInFlight: 2000, Recorder: rec, Stop: l.stop, Observe: l.observe,
			NewRequest: func(ctx context.Context) (*http.Request, error) {
				return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			}}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			g.Run(context.Background(), s.rate, maxLoad)
		}()
	}
	return l
}

// closed starts n clients that each send svc's request again as soon as the last one
// was answered, until finish: n requests in flight whatever the latency, so that the
// revision's concurrency, and the count it wants, do not move with the machine's speed.
func (p *platform) closed(svc string, n, sleepMS int) *load {
	l := &load{start: time.Now(), recs: map[string]*loadgen.Recorder{}, stop: make(chan struct{})}
	rec := loadgen.NewRecorder(l.start)
	l.recs[svc] = rec
	cl := p.client(90 * time.Second)
	url := fmt.Sprintf("http://%s.default.localhost/?sleep=%d", svc, sleepMS)
	deadline := l.start.Add(maxLoad)
	for range n {
		l.wg.Go(func() {
			for time.Now().Before(deadline) {
				select {
				case <-l.stop:
					return
				default:
				}
				at := time.Now()
				rec.Offer(at)
				resp, err := cl.Get(url)
				if err != nil {
					rec.Done(at, time.Since(at), 0, err)
					continue
				}
				l.observe(resp)
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				rec.Done(at, time.Since(at), resp.StatusCode, err)
			}
		})
	}
	return l
}

// elapsed is the time since the load started, in whole seconds (the recorder's buckets).
func (l *load) second(t time.Time) int { return int(t.Sub(l.start) / time.Second) }

// finish stops new arrivals and returns once every request has finished.
func (l *load) finish() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// outcome is the load's figures over every stream.
type outcome struct {
	loadgen.Totals
	requests    int
	failedAfter int // failures of requests sent at or after the second `after`
	errors      map[string]int
}

// outcome sums every stream; failures of requests sent from `after` on (seconds since
// the start) are counted apart.
func (l *load) outcome(after int) outcome {
	o := outcome{errors: map[string]int{}}
	l.mu.Lock()
	for k, n := range l.bodies {
		o.errors[k] += n
	}
	l.mu.Unlock()
	for _, rec := range l.recs {
		t := rec.Totals(0, 1<<30)
		o.requests += t.OK + t.Errors + t.Shed
		o.OK += t.OK
		o.Errors += t.Errors
		o.Shed += t.Shed
		o.Transport += t.Transport
		if o.Codes == nil {
			o.Codes = map[int]int{}
		}
		for c, n := range t.Codes {
			o.Codes[c] += n
		}
		if t.P99 > o.P99 {
			o.P99 = t.P99
		}
		if t.Max > o.Max {
			o.Max = t.Max
		}
		for _, s := range rec.Seconds() {
			if s.T >= after {
				o.failedAfter += s.Errors + s.Shed
			}
		}
		for e, n := range rec.ErrorTexts() {
			o.errors[e] += n
		}
	}
	return o
}

func (o outcome) codes() string {
	var ks []int
	for c := range o.Codes {
		ks = append(ks, c)
	}
	sort.Ints(ks)
	s := ""
	for _, c := range ks {
		s += fmt.Sprintf("%d×%d ", c, o.Codes[c])
	}
	if s == "" {
		return "-"
	}
	return s[:len(s)-1]
}

// record adds the fault's row to the table printed at the end.
func (p *platform) record(tb testing.TB, fault string, o outcome, recovery time.Duration, note string) {
	tb.Logf("%s: %d requests, %d non-2xx (%s), %d without an answer, p99 %v, max %v, recovery %v; %s; errors %v",
		fault, o.requests, o.Errors-o.Transport, o.codes(), o.Transport, o.P99, o.Max, recovery, note, o.errors)
	p.rows = append(p.rows, row{fault: fault, requests: o.requests, ok: o.OK, non2xx: o.Errors - o.Transport,
		noAnswer: o.Transport + o.Shed, codes: o.codes(), p99: o.P99, max: o.Max, recovery: recovery, note: note})
}

// revision is the service's routed revision (its Nomad job and Consul service name).
func (p *platform) revision(tb testing.TB, svc string) string {
	tb.Helper()
	s, err := store.New(p.c.Consul).GetService(context.Background(), "default", svc)
	fatalIf(tb, err)
	if s == nil || s.LatestReady == "" {
		tb.Fatalf("service %s has no ready revision", svc)
	}
	return s.LatestReady
}

// count is the revision's Nomad group count.
func (p *platform) count(rev string) (int, error) {
	j, _, err := p.c.Nomad.Jobs().Info(rev, nil)
	if err != nil {
		return 0, err
	}
	if len(j.TaskGroups) == 0 || j.TaskGroups[0].Count == nil {
		return 0, fmt.Errorf("job %s has no group count", rev)
	}
	return *j.TaskGroups[0].Count, nil
}

// passing are the revision's passing instances in Consul, by node name.
func (p *platform) passing(rev string) (map[string]int, error) {
	es, _, err := p.c.Consul.Health().Service(rev, "", true, nil)
	if err != nil {
		return nil, err
	}
	m := map[string]int{}
	for _, e := range es {
		m[e.Node.Node]++
	}
	return m, nil
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// watchCounts samples the revision's Nomad count every 200 ms until the returned stop is
// called, which returns the lowest and highest count seen.
func (p *platform) watchCounts(rev string) (stop func() (lo, hi int)) {
	lo, hi := 1<<30, 0
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if c, err := p.count(rev); err == nil {
				lo, hi = min(lo, c), max(hi, c)
			}
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() (int, int) {
		close(quit)
		<-done
		return lo, hi
	}
}
