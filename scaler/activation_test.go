package scaler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/fakegateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// leading starts the harness's long poll at gw: a tick with gw listed, then the poller
// parked.
func (h *harness) leading(gw *fakegateway.Gateway) {
	h.t.Helper()
	h.gws.set(gw)
	h.ticks(1)
	waitParked(h.t, gw, 0)
}

// announce has gw announce acts and waits until the scaler handled them (its poller is
// back for the next answer).
func announce(t *testing.T, gw *fakegateway.Gateway, acts ...gauges.Activation) {
	t.Helper()
	waitParked(t, gw, gw.Activate(acts...))
}

func held(rev string, n int64) gauges.Activation {
	return gauges.Activation{Namespace: "default", Revision: rev, Held: n}
}

// A revision registered at zero and woken before the listing has it (autoscaling
// { initial = 0 }) is read from Nomad and scaled by the activation itself, not by a
// tick; the ticks whose listing predates it keep it, and the one that lists it takes it.
func TestActivationOfUnlistedRevision(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.leading(gw)
	job := h.nomad.addUnlisted(revCfg("svc-00001", nil), 0)
	gw.Set("default", "svc-00001", 0, 150)
	start := time.Now()
	gw.Activate(held("svc-00001", 150))
	c := waitScale(t, h, 3, "activation of a revision not listed yet") // 150 / 70
	t.Logf("activation → Jobs.Scale in %v", c.at.Sub(start))
	if c.meta["rouse.reason"] != kpa.Activate.String() {
		t.Fatalf("scaled for %v, want the activation", c.meta["rouse.reason"])
	}
	if lag := c.at.Sub(start); lag > 50*time.Millisecond {
		t.Fatalf("activation took %v, budget 50 ms", lag)
	}
	if n := h.nomad.jobReads(); n != 1 {
		t.Fatalf("%d job reads, want 1", n)
	}
	key := revKey{"default", "svc-00001"}
	h.ticks(3) // listings from before the job: kept, and kept up
	h.s.mu.Lock()
	r := h.s.table.byRev[key]
	unlisted := r != nil && r.unlisted
	h.s.mu.Unlock()
	if !unlisted || h.nomad.count(job) != 3 {
		t.Fatalf("after ticks with a listing that predates it: in table %v (unlisted %v), count %d", r != nil, unlisted, h.nomad.count(job))
	}
	h.nomad.listed(job)
	h.ticks(1)
	h.s.mu.Lock()
	same, unlisted := h.s.table.byRev[key] == r, r.unlisted
	h.s.mu.Unlock()
	if !same || unlisted || h.nomad.count(job) != 3 {
		t.Fatalf("once listed: same revision %v, unlisted %v, count %d", same, unlisted, h.nomad.count(job))
	}
	if n := len(h.nomad.scaleCalls()); n != 1 {
		t.Fatalf("%d scale calls, want the activation's only: %v", n, h.nomad.scaleCalls())
	}
}

// A revision the table lists but whose count it could not read yet is read by the
// activation too.
func TestActivationReadsUnknownCount(t *testing.T) {
	h := newHarness(t)
	h.nomad.countErr = errors.New("Unexpected response code: 500 (boom)")
	job := h.nomad.add(revCfg("svc-00001", nil), 0)
	gw := fakegateway.Start(t, "gw-1")
	h.leading(gw)
	h.s.mu.Lock()
	r := h.s.table.byRev[revKey{"default", "svc-00001"}]
	known := r != nil && r.countIndex != 0
	h.s.mu.Unlock()
	if r == nil || known {
		t.Fatalf("setup: listed %v, count known %v", r != nil, known)
	}
	gw.Activate(held("svc-00001", 1))
	waitScale(t, h, 1, "activation of a revision whose count was unknown")
	if h.nomad.count(job) != 1 || h.nomad.jobReads() != 1 {
		t.Fatalf("count %d, job reads %d", h.nomad.count(job), h.nomad.jobReads())
	}
}

// What Nomad does not have as that revision is not scaled, and not asked for again
// before lookupRetry: a job that is no rouse revision, one whose meta names another
// revision, one missing; a revision outside the namespaces served is not asked for.
func TestActivationOfNoRevision(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.leading(gw)
	plain := h.nomad.addUnlisted(revCfg("plain-1", nil), 0)
	h.nomad.jobs[plain].meta = map[string]string{"owner": "someone"}
	other := h.nomad.addUnlisted(revCfg("other-1", nil), 0)
	h.nomad.jobs[other].meta[revmeta.KeyRevision] = "other-2"

	acts := []gauges.Activation{held("plain-1", 1), held("other-1", 1), held("gone-1", 1)}
	announce(t, gw, acts...)
	if n := h.nomad.jobReads(); n != 3 {
		t.Fatalf("%d job reads, want 3", n)
	}
	announce(t, gw, acts...)
	if n := h.nomad.jobReads(); n != 3 {
		t.Fatalf("read again at once: %d job reads, want 3", n)
	}
	h.clock.Step(lookupRetry)
	announce(t, gw, acts...)
	if n := h.nomad.jobReads(); n != 6 {
		t.Fatalf("after lookupRetry: %d job reads, want 6", n)
	}
	h.s.cfg.Namespaces = []string{"prod"}
	h.clock.Step(lookupRetry)
	announce(t, gw, acts...)
	if n := h.nomad.jobReads(); n != 6 {
		t.Fatalf("read a revision outside the namespaces served: %d job reads", n)
	}
	if calls := h.nomad.scaleCalls(); len(calls) != 0 {
		t.Fatalf("scaled %v", calls)
	}
}

// Two gateways announcing the same new revision at once read it from Nomad once.
func TestConcurrentActivationsReadOnce(t *testing.T) {
	h := newHarness(t)
	h.nomad.addUnlisted(revCfg("svc-00001", nil), 0)
	gate := make(chan struct{})
	h.nomad.jobGate = gate
	key := revKey{"default", "svc-00001"}
	now := h.clock.Now()
	var wg sync.WaitGroup
	results := make([]bool, 2)
	wg.Go(func() { results[0] = h.s.know(h.ctx, key, now) })
	poll.Until(t, 5*time.Second, "the first read under way", poll.True(func() bool { return h.nomad.jobReads() == 1 }))
	wg.Go(func() { results[1] = h.s.know(h.ctx, key, now) })
	close(gate)
	wg.Wait()
	if !results[0] || !results[1] || h.nomad.jobReads() != 1 {
		t.Fatalf("know %v, %d job reads (want both true, 1 read)", results, h.nomad.jobReads())
	}
}

// A revision read for an activation adopts the failure record a previous leader left
// before the first listing did, and stays at zero through its backoff.
func TestActivationOfUnlistedRevisionRespectsBackoff(t *testing.T) {
	h := newHarness(t)
	_, fails := h.withFailureWatch()
	gw := fakegateway.Start(t, "gw-1")
	job := h.nomad.addUnlisted(revCfg("svc-00001", nil), 0)
	h.nomad.mu.Lock()
	create := h.nomad.jobs[job].create
	h.nomad.mu.Unlock()
	now := h.clock.Now()
	f := store.Failure{Namespace: "default", Revision: "svc-00001", Reason: "boom", At: now, RetryAt: now.Add(20 * time.Second), Attempt: 1, JobCreateIndex: create}
	fails.recs[revKey{f.Namespace, f.Revision}] = f
	h.s.mu.Lock()
	h.s.table.stored = h.s.loadFailures(h.ctx)
	h.s.mu.Unlock()
	// Before any tick adopted the records: the activation arrives first.
	gw.Set("default", "svc-00001", 0, 1)
	h.gws.set(gw)
	h.s.trackGateways(h.ctx, []gateway{gatewayOf(gw)})
	waitParked(t, gw, 0)
	announce(t, gw, held("svc-00001", 1))
	if h.nomad.jobReads() != 1 {
		t.Fatalf("%d job reads, want 1", h.nomad.jobReads())
	}
	h.ticks(2)
	announce(t, gw, held("svc-00001", 1))
	if calls := h.nomad.scaleCalls(); len(calls) != 0 {
		t.Fatalf("woken during its backoff: %v", calls)
	}
	if _, ok := fails.record(revKey{"default", "svc-00001"}); !ok {
		t.Fatal("the record was deleted")
	}
	h.clock.Step(20 * time.Second)
	announce(t, gw, held("svc-00001", 1))
	waitScale(t, h, 1, "past the backoff")
}

// No leadership, no reads and no scale.
func TestActivationWhileNotLeading(t *testing.T) {
	h := newHarness(t)
	h.nomad.addUnlisted(revCfg("svc-00001", nil), 0)
	h.s.mu.Lock()
	h.s.table = nil
	h.s.mu.Unlock()
	h.s.onActivations(h.ctx, gateway{id: "gw-1"}, []gauges.Activation{held("svc-00001", 1)})
	if h.nomad.jobReads() != 0 || len(h.nomad.scaleCalls()) != 0 {
		t.Fatalf("%d job reads, %d scales", h.nomad.jobReads(), len(h.nomad.scaleCalls()))
	}
}

func stub(ns, id string, create, modify uint64, meta map[string]string) *nomadapi.JobListStub {
	return &nomadapi.JobListStub{ID: id, Namespace: ns, Meta: meta, CreateIndex: create, JobModifyIndex: modify}
}

// learn takes a job read alone only as the revision the gateways named, and sync keeps
// it while listings predate the job, for at most unlistedTicks of them.
func TestLearnAndSync(t *testing.T) {
	meta := revCfg("svc-00001", nil).Meta()
	key := revKey{"default", "svc-00001"}
	newT := func() *table { return newTable(kpa.Options{Granularity: 2 * time.Second}, zap.NewNop()) }

	tb := newT()
	for name, j := range map[string]*nomadapi.JobListStub{
		"not rouse's":  stub("default", "svc-00001", 50, 50, map[string]string{"a": "b"}),
		"other name":   stub("default", "svc-00001", 50, 50, revCfg("svc-00002", nil).Meta()),
		"other ns":     stub("default", "svc-00001", 50, 50, revmeta.Defaults("prod", "svc", "svc-00001").Meta()),
		"stopped":      {ID: "svc-00001", Namespace: "default", Meta: meta, CreateIndex: 50, JobModifyIndex: 50, Stop: true},
		"bad autoscal": stub("default", "svc-00001", 50, 50, func() map[string]string { m := revCfg("svc-00001", nil).Meta(); m[revmeta.KeyWindow] = "x"; return m }()),
	} {
		if r := tb.learn(key, j, 0); r != nil || len(tb.byJob) != 0 {
			t.Errorf("%s: learned %v", name, r)
		}
	}

	tb = newT()
	r := tb.learn(key, stub("default", "svc-00001", 50, 50, meta), 2)
	if r == nil || !r.unlisted || r.nomad != 2 || r.want != 2 || r.countIndex != 50 || tb.byRev[key] != r {
		t.Fatalf("learned %+v", r)
	}
	for range unlistedTicks {
		tb.sync(listing{index: 49})
	}
	if tb.byRev[key] != r || len(tb.dropped) != 0 {
		t.Fatal("dropped while listings predate the job")
	}
	tb.sync(listing{index: 49})
	if tb.byRev[key] != nil || len(tb.dropped) != 1 {
		t.Fatal("kept past unlistedTicks listings")
	}

	tb = newT()
	r = tb.learn(key, stub("default", "svc-00001", 50, 50, meta), 0)
	tb.sync(listing{index: 60})
	if tb.byRev[key] != nil || len(tb.dropped) != 1 || tb.dropped[0] != r {
		t.Fatal("a listing made after the job that lacks it did not drop it")
	}

	tb = newT()
	r = tb.learn(key, stub("default", "svc-00001", 50, 50, meta), 0)
	r.want, r.nomad, r.countIndex = 1, 1, 55 // the activation scaled it
	need := tb.sync(listing{stubs: []*nomadapi.JobListStub{stub("default", "svc-00001", 50, 55, meta)}, index: 60})
	if tb.byRev[key] != r || r.unlisted || len(need) != 0 {
		t.Fatalf("listed: same %v, unlisted %v, counts to read %d", tb.byRev[key] == r, r.unlisted, len(need))
	}
	tb.sync(listing{index: 49}) // a listed revision missing from a listing goes, whatever its index
	if tb.byRev[key] != nil {
		t.Fatal("a listed revision was kept by the unlisted rule")
	}
}

// A count read that is not newer than what the table knows changes nothing.
func TestSetCountIgnoresStaleReads(t *testing.T) {
	tb := newTable(kpa.Options{Granularity: 2 * time.Second}, zap.NewNop())
	r := &revision{}
	tb.setCount(r, 0, 50)
	r.want, r.nomad, r.countIndex = 1, 1, 55 // a Scale answered
	tb.setCount(r, 0, 50)
	tb.setCount(r, 0, 55)
	if r.want != 1 || r.nomad != 1 || r.countIndex != 55 {
		t.Fatalf("stale read applied: %+v", r)
	}
	tb.setCount(r, 4, 60)
	if r.want != 4 || r.nomad != 4 || r.countIndex != 60 {
		t.Fatalf("newer read not applied: %+v", r)
	}
}

// watchedGateways is a gatewayWatcher whose list changes when the test sets it.
type watchedGateways struct {
	fakeGateways
	index   uint64
	changed chan struct{}
}

func newWatchedGateways() *watchedGateways {
	return &watchedGateways{index: 1, changed: make(chan struct{})}
}

var _ gatewayWatcher = (*watchedGateways)(nil)

func (w *watchedGateways) WatchGateways(ctx context.Context, waitIndex uint64) ([]gateway, uint64, error) {
	w.mu.Lock()
	for waitIndex != 0 && waitIndex == w.index {
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	return append([]gateway(nil), w.gws...), w.index, nil
}

func (w *watchedGateways) change(gws ...*fakegateway.Gateway) {
	w.set(gws...)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.index++
	close(w.changed)
	w.changed = make(chan struct{})
}

// A gateway that joins is long-polled at once, not at the next tick, and one that leaves
// is no longer polled.
func TestGatewayWatchStartsLongPollsAtOnce(t *testing.T) {
	h := newHarness(t)
	job := h.nomad.add(revCfg("svc-00001", nil), 0)
	h.ticks(1) // knows the job at 0; no gateway yet
	w := newWatchedGateways()
	go h.s.watchGateways(h.ctx, w)

	gw := fakegateway.Start(t, "gw-1")
	w.change(gw)
	waitParked(t, gw, 0) // the clock has not moved: no tick started it
	gw.Activate(held("svc-00001", 1))
	waitScale(t, h, 1, "activation at a gateway that just joined")
	if h.nomad.count(job) != 1 {
		t.Fatalf("count %d", h.nomad.count(job))
	}

	seq := gw.Activate(held("svc-00001", 1))
	waitParked(t, gw, seq)
	w.change()
	poll.Until(t, 5*time.Second, "the long poll at the gateway that left ended", poll.True(func() bool { return gw.Parked(seq) == 0 }))
}
