package scaler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/fakegateway"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// fakeNomad is jobsAPI over a map. Instances start at once: running = count.
type fakeNomad struct {
	mu       sync.Mutex
	jobs     map[jobKey]*fakeJob
	index    uint64
	scaleErr error
	countErr error         // Count fails with it
	jobGate  chan struct{} // non-nil: Job waits for it to close (or receive)
	calls    []scaleCall
	scaled   chan scaleCall
	counts   int
	infos    int // Job calls
	lists    int
	blocked  int // List calls waiting for the index to move
	changed  chan struct{}
	// flight (non-nil) counts Scale calls in flight, which take scaleDelay outside the lock
	// (set both before the scaler runs).
	flight     *inFlight
	scaleDelay time.Duration
}

// inFlight counts a fake's requests in flight and the most there were at once.
type inFlight struct{ now, peak atomic.Int64 }

func (f *inFlight) enter() (leave func()) {
	n := f.now.Add(1)
	for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
	}
	return func() { f.now.Add(-1) }
}

type fakeJob struct {
	meta           map[string]string
	count, running int
	index, create  uint64
	lagRunning     bool // running stays where it was until set by the test
	unlisted       bool // registered, but listings do not show it yet (listed ends that)
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

// addUnlisted registers a job that listings do not show yet: they answer as of an index
// before its creation, as a job watch waiting out its tick does.
func (f *fakeNomad) addUnlisted(cfg revmeta.Config, count int) jobKey {
	k := f.add(cfg, count)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs[k].unlisted = true
	return k
}

// listed lets listings show k.
func (f *fakeNomad) listed(k jobKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs[k].unlisted = false
	f.bump()
}

func (f *fakeNomad) count(k jobKey) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[k].count
}

// jobReads is how many Job calls were made.
func (f *fakeNomad) jobReads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.infos
}

// scaleCalls is a copy of the Scale calls Nomad accepted so far.
func (f *fakeNomad) scaleCalls() []scaleCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]scaleCall(nil), f.calls...)
}

// listing reports how many List calls were made and how many wait in a blocking query.
func (f *fakeNomad) listing() (lists, blocked int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists, f.blocked
}

func (f *fakeNomad) List(ctx context.Context, _ string, waitIndex uint64) ([]*nomadapi.JobListStub, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	for waitIndex != 0 && waitIndex == f.index {
		ch := f.changed
		f.blocked++
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			f.mu.Lock()
			f.blocked--
			return nil, 0, ctx.Err()
		}
		f.mu.Lock()
		f.blocked--
	}
	var out []*nomadapi.JobListStub
	index := f.index
	for k, j := range f.jobs {
		if j.unlisted {
			index = min(index, j.create-1)
			continue
		}
		out = append(out, &nomadapi.JobListStub{ID: k.id, Namespace: k.ns, Meta: j.meta, JobModifyIndex: j.index, CreateIndex: j.create,
			JobSummary: &nomadapi.JobSummary{Summary: map[string]nomadapi.TaskGroupSummary{revmeta.Group: {Running: j.running}}}})
	}
	return out, index, nil
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
	if f.countErr != nil {
		return 0, 0, f.countErr
	}
	j, ok := f.jobs[k]
	if !ok {
		return 0, 0, errors.New("job not found")
	}
	return j.count, j.index, nil
}

func (f *fakeNomad) Job(ctx context.Context, k jobKey) (*nomadapi.JobListStub, int, error) {
	f.mu.Lock()
	f.infos++
	gate := f.jobGate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[k]
	if !ok {
		return nil, 0, errors.New("Unexpected response code: 404 (job not found)")
	}
	return &nomadapi.JobListStub{ID: k.id, Namespace: k.ns, Meta: j.meta, JobModifyIndex: j.index, CreateIndex: j.create}, j.count, nil
}

func (f *fakeNomad) Scale(ctx context.Context, k jobKey, n int, msg string, meta map[string]any) (uint64, error) {
	if f.flight != nil {
		defer f.flight.enter()()
		time.Sleep(f.scaleDelay)
	}
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

// gatewayOf is the scaler's view of a fake gateway.
func gatewayOf(g *fakegateway.Gateway) gateway { return gateway{id: g.ID(), addr: g.Addr()} }

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

func (f *fakeGateways) set(gws ...*fakegateway.Gateway) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gws = nil
	for _, g := range gws {
		f.gws = append(f.gws, gatewayOf(g))
	}
}

// setRaw lists gws as they are (addresses nothing may serve).
func (f *fakeGateways) setRaw(gws ...gateway) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gws = gws
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
