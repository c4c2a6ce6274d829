package scaler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// fakeClock moves only when told; its tickers never fire (tests call tick directly).
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *fakeClock) NewTicker(time.Duration) Ticker { return idleTicker{} }

type idleTicker struct{}

func (idleTicker) C() <-chan time.Time { return nil }
func (idleTicker) Stop()               {}

// fakeNomad is jobsAPI over a map. Instances start at once: running = count.
type fakeNomad struct {
	mu       sync.Mutex
	jobs     map[jobKey]*fakeJob
	index    uint64
	scaleErr error
	calls    []scaleCall
	scaled   chan scaleCall
	counts   int
	lists    int
	changed  chan struct{}
}

type fakeJob struct {
	meta           map[string]string
	count, running int
	index, create  uint64
	lagRunning     bool // running stays where it was until set by the test
}

type scaleCall struct {
	job   jobKey
	count int
	msg   string
	meta  map[string]any
	at    time.Time
}

var _ jobsAPI = (*fakeNomad)(nil)

func newFakeNomad() *fakeNomad {
	return &fakeNomad{jobs: map[jobKey]*fakeJob{}, index: 100, scaled: make(chan scaleCall, 100), changed: make(chan struct{})}
}

func (f *fakeNomad) add(cfg revmeta.Config, count int) jobKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := jobKey{cfg.Namespace, cfg.Revision}
	i := f.bump()
	f.jobs[k] = &fakeJob{meta: cfg.Meta(), count: count, running: count, index: i, create: i}
	return k
}

func (f *fakeNomad) count(k jobKey) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[k].count
}

func (f *fakeNomad) List(ctx context.Context, _ string, waitIndex uint64) ([]*nomadapi.JobListStub, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	for waitIndex != 0 && waitIndex == f.index {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			f.mu.Lock()
			return nil, 0, ctx.Err()
		}
		f.mu.Lock()
	}
	var out []*nomadapi.JobListStub
	for k, j := range f.jobs {
		out = append(out, &nomadapi.JobListStub{ID: k.id, Namespace: k.ns, Meta: j.meta, JobModifyIndex: j.index, CreateIndex: j.create,
			JobSummary: &nomadapi.JobSummary{Summary: map[string]nomadapi.TaskGroupSummary{revmeta.Group: {Running: j.running}}}})
	}
	return out, f.index, nil
}

// bump moves the index on and wakes blocking lists; f.mu held.
func (f *fakeNomad) bump() uint64 {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
	return f.index
}

func (f *fakeNomad) Count(ctx context.Context, k jobKey) (int, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts++
	j, ok := f.jobs[k]
	if !ok {
		return 0, 0, errors.New("job not found")
	}
	return j.count, j.index, nil
}

func (f *fakeNomad) Scale(ctx context.Context, k jobKey, n int, msg string, meta map[string]any) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := scaleCall{k, n, msg, meta, time.Now()}
	if f.scaleErr != nil {
		return 0, f.scaleErr
	}
	j, ok := f.jobs[k]
	if !ok {
		return 0, errors.New("Unexpected response code: 404 (job not found)")
	}
	j.count, j.index = n, f.bump()
	if !j.lagRunning {
		j.running = n
	}
	f.calls = append(f.calls, c)
	f.scaled <- c
	return f.index, nil
}

// fakeGateway serves the real gauges wire format.
type fakeGateway struct {
	mu      sync.Mutex
	id      string
	revs    map[revKey]*gauges.Revision
	fail    bool
	seq     uint64
	acts    []gauges.Activation
	changed chan struct{}
	done    chan struct{}
	srv     *httptest.Server
}

func newFakeGateway(t *testing.T, id string) *fakeGateway {
	g := &fakeGateway{id: id, revs: map[revKey]*gauges.Revision{}, changed: make(chan struct{}), done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/gauges", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		rep := gauges.Report{Gateway: g.id, At: time.Now()}
		keys := make([]revKey, 0, len(g.revs))
		for k := range g.revs {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i].rev < keys[j].rev })
		for _, k := range keys {
			rep.Revisions = append(rep.Revisions, *g.revs[k])
		}
		gauges.Write(w, rep)
	})
	mux.HandleFunc("/activations", func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		g.mu.Lock()
		ch := g.changed
		if after == g.seq {
			g.mu.Unlock()
			select {
			case <-ch:
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			case <-g.done:
				return
			}
			g.mu.Lock()
		}
		seq, acts := g.seq, g.acts
		g.mu.Unlock()
		gauges.WriteActivations(w, seq, acts)
	})
	g.srv = httptest.NewServer(mux)
	t.Cleanup(func() { close(g.done); g.srv.Close() })
	return g
}

func (g *fakeGateway) set(ns, rev string, inFlight, held int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := revKey{ns, rev}
	v := g.revs[k]
	if v == nil {
		v = &gauges.Revision{Namespace: ns, Revision: rev}
		g.revs[k] = v
	}
	v.InFlight, v.Held = inFlight, held
}

func (g *fakeGateway) setFail(b bool) {
	g.mu.Lock()
	g.fail = b
	g.mu.Unlock()
}

func (g *fakeGateway) activate(acts ...gauges.Activation) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	g.acts = acts
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *fakeGateway) gateway() gateway {
	return gateway{id: g.id, addr: g.srv.Listener.Addr().String()}
}

// fakeGateways is a fixed gateway list.
type fakeGateways struct {
	mu  sync.Mutex
	gws []gateway
}

func (f *fakeGateways) Gateways(context.Context) ([]gateway, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]gateway(nil), f.gws...), nil
}

func (f *fakeGateways) set(gws ...*fakeGateway) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gws = nil
	for _, g := range gws {
		f.gws = append(f.gws, g.gateway())
	}
}

// deadGateway is an address nothing listens on.
func deadGateway(t *testing.T) gateway {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return gateway{id: "dead", addr: addr}
}

func revCfg(name string, mod func(*revmeta.Config)) revmeta.Config {
	c := revmeta.Defaults("default", "svc", name)
	c.Window, c.ScaleToZeroGrace = 10*time.Second, 4*time.Second
	if mod != nil {
		mod(&c)
	}
	return c
}

func (c scaleCall) String() string { return fmt.Sprintf("%s→%d", c.job.id, c.count) }
