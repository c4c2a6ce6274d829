package scaler

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/fakegateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/scaler/kpa"
)

func TestFailBackoffSchedule(t *testing.T) {
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, w := range want {
		if got := failBackoff(i + 1); got != w {
			t.Errorf("failBackoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	if got := failBackoff(1000); got != failBackoffMax {
		t.Errorf("failBackoff(1000) = %s", got)
	}
}

// alloc is an allocation stub of the app task.
func alloc(id string, create uint64, desired, client string, events ...*nomadapi.TaskEvent) *nomadapi.AllocationListStub {
	return &nomadapi.AllocationListStub{ID: id, CreateIndex: create, ModifyIndex: create + 1, DesiredStatus: desired, ClientStatus: client,
		TaskStates: map[string]*nomadapi.TaskState{revmeta.Task: {State: "dead", Failed: client == "failed", Events: events}}}
}

func terminated(code int) *nomadapi.TaskEvent {
	return &nomadapi.TaskEvent{Type: nomadapi.TaskTerminated, ExitCode: code, DisplayMessage: "Exit Code: " + itoa(code),
		Details: map[string]string{"exit_code": itoa(code), "signal": "0", "oom_killed": "false"}}
}

func itoa(n int) string { return strconv.Itoa(n) }

// readyGateway is a gateway that routes to one ready instance of ns/rev (its
// /activations is not served: the scaler's long poll there just retries).
func readyGateway(t *testing.T, id, ns, rev string) gateway {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/gauges", func(w http.ResponseWriter, _ *http.Request) {
		_ = gauges.Write(w, gauges.Report{Gateway: id, At: time.Now(),
			Revisions: []gauges.Revision{{Namespace: ns, Revision: rev, Ready: 1}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return gateway{id: id, addr: srv.Listener.Addr().String()}
}

var notRestarting = &nomadapi.TaskEvent{Type: nomadapi.TaskNotRestarting, DisplayMessage: `Exceeded allowed attempts 1 in interval 10s and mode is "fail"`}

func TestAssessAllocs(t *testing.T) {
	const since = 100
	for _, tc := range []struct {
		name   string
		allocs []*nomadapi.AllocationListStub
		alive  bool
		failed string
	}{
		{"none yet", nil, false, ""},
		{"pending", []*nomadapi.AllocationListStub{alloc("a", 101, "run", "pending")}, true, ""},
		{"running beside a failed one", []*nomadapi.AllocationListStub{
			alloc("a", 101, "run", "failed", terminated(3)), alloc("b", 102, "run", "running")}, true, ""},
		{"failed", []*nomadapi.AllocationListStub{alloc("a", 101, "run", "failed", terminated(3), notRestarting)}, false, "a"},
		{"the newest of two failed", []*nomadapi.AllocationListStub{
			alloc("a", 101, "stop", "failed"), alloc("b", 105, "run", "failed")}, false, "b"},
		{"an earlier wake's failure is not this one's", []*nomadapi.AllocationListStub{
			alloc("old", 90, "stop", "failed"), alloc("done", 80, "stop", "complete")}, false, ""},
		{"scaled down: complete and stopped", []*nomadapi.AllocationListStub{alloc("a", 101, "stop", "complete")}, false, ""},
		{"exited on its own while wanted", []*nomadapi.AllocationListStub{alloc("a", 101, "run", "complete", terminated(0))}, false, "a"},
		{"stopping instance still running is not alive", []*nomadapi.AllocationListStub{
			alloc("a", 90, "stop", "running"), alloc("b", 101, "run", "failed")}, false, "b"},
		{"lost says nothing", []*nomadapi.AllocationListStub{alloc("a", 101, "run", "lost")}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := assessAllocs(tc.allocs, since)
			got := ""
			if v.failed != nil {
				got = v.failed.ID
			}
			if v.alive != tc.alive || got != tc.failed {
				t.Fatalf("alive %v failed %q, want alive %v failed %q", v.alive, got, tc.alive, tc.failed)
			}
		})
	}
}

func TestFailureReason(t *testing.T) {
	long := strings.Repeat("é", 300)
	for _, tc := range []struct {
		name, stderr string
		a            *nomadapi.AllocationListStub
		want         string
	}{
		{"stderr and exit code", "\n  boom: config missing\r\nsecond line\n",
			alloc("a", 1, "run", "failed", terminated(3), notRestarting), "boom: config missing (exit 3)"},
		{"no stderr: the task event", "", alloc("a", 1, "run", "failed", terminated(3), notRestarting), "Exit Code: 3"},
		{"killed by a signal", "fatal\n", alloc("a", 1, "run", "failed", &nomadapi.TaskEvent{Type: nomadapi.TaskTerminated,
			DisplayMessage: "Exit Code: 137, Signal: 9", Details: map[string]string{"exit_code": "137", "signal": "9"}}), "fatal (signal 9)"},
		{"driver failure", "", alloc("a", 1, "run", "failed", &nomadapi.TaskEvent{Type: nomadapi.TaskDriverFailure,
			DisplayMessage: "failed to launch command with executor: no such file"}, notRestarting),
			"failed to launch command with executor: no such file"},
		{"no events", "", &nomadapi.AllocationListStub{ClientStatus: "failed", ClientDescription: "Failed tasks"}, "Failed tasks"},
		{"control bytes become spaces", "bad\x1b[31m red\x00\n", alloc("a", 1, "run", "failed", terminated(1)), "bad [31m red (exit 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := failureReason(firstLine([]byte(tc.stderr)), tc.a); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	got := failureReason(long, alloc("a", 1, "run", "failed", terminated(3)))
	if len(got) > store.MaxFailureReason || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "éé") {
		t.Fatalf("a long line is kept to %d bytes with an ellipsis: %d bytes %q", store.MaxFailureReason, len(got), got)
	}
}

// fakeAllocs is allocsAPI over a list the test sets; Allocations blocks like Nomad's.
type fakeAllocs struct {
	mu      sync.Mutex
	index   uint64
	allocs  []*nomadapi.AllocationListStub
	stderr  string
	changed chan struct{}
	queries int
	flight  *inFlight // non-nil: counts queries in flight
}

var _ allocsAPI = (*fakeAllocs)(nil)

func newFakeAllocs() *fakeAllocs { return &fakeAllocs{index: 1, changed: make(chan struct{})} }

func (f *fakeAllocs) set(allocs ...*nomadapi.AllocationListStub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allocs = allocs
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAllocs) Allocations(ctx context.Context, _ jobKey, wait uint64, waitFor time.Duration) ([]*nomadapi.AllocationListStub, uint64, error) {
	if f.flight != nil {
		defer f.flight.enter()()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	timeout := time.After(waitFor) // like Nomad's WaitTime (the real clock: tests step a fake one)
	for wait != 0 && wait == f.index {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			f.mu.Lock()
			return append([]*nomadapi.AllocationListStub(nil), f.allocs...), f.index, nil
		case <-ctx.Done():
			f.mu.Lock()
			return nil, 0, ctx.Err()
		}
		f.mu.Lock()
	}
	return append([]*nomadapi.AllocationListStub(nil), f.allocs...), f.index, nil
}

func (f *fakeAllocs) StderrHead(_ context.Context, _ jobKey, _ *nomadapi.AllocationListStub, max int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := []byte(f.stderr)
	return b[:min(len(b), max)], nil
}

// fakeFailures is failureStore over a map.
type fakeFailures struct {
	mu      sync.Mutex
	recs    map[revKey]store.Failure
	puts    []store.Failure
	deletes []revKey
	put     chan store.Failure
}

var _ failureStore = (*fakeFailures)(nil)

func newFakeFailures() *fakeFailures {
	return &fakeFailures{recs: map[revKey]store.Failure{}, put: make(chan store.Failure, 10)}
}

func (f *fakeFailures) PutFailure(_ context.Context, r store.Failure) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[revKey{r.Namespace, r.Revision}] = r
	f.puts = append(f.puts, r)
	f.put <- r
	return nil
}

func (f *fakeFailures) DeleteFailure(_ context.Context, ns, rev string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.recs, revKey{ns, rev})
	f.deletes = append(f.deletes, revKey{ns, rev})
	return nil
}

func (f *fakeFailures) ListFailures(context.Context) ([]store.Failure, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Failure
	for _, r := range f.recs {
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeFailures) record(k revKey) (store.Failure, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[k]
	return r, ok
}

// nextIndex is the index Nomad gives what it creates next (an allocation of the last scale).
func (f *fakeNomad) nextIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index + 1
}

// withFailureWatch gives the harness's scaler a fake Nomad allocation API and record store.
func (h *harness) withFailureWatch() (*fakeAllocs, *fakeFailures) {
	a, f := newFakeAllocs(), newFakeFailures()
	h.s.allocs, h.s.fails = a, f
	h.s.mu.Lock()
	h.s.leadCtx = h.ctx
	h.s.mu.Unlock()
	return a, f
}

func waitScale(t *testing.T, h *harness, count int, what string) scaleCall {
	t.Helper()
	select {
	case c := <-h.nomad.scaled:
		if c.count != count {
			t.Fatalf("%s: scaled to %d, want %d", what, c.count, count)
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no scale to %d", what, count)
	}
	return scaleCall{}
}

func waitPut(t *testing.T, f *fakeFailures, what string) store.Failure {
	t.Helper()
	select {
	case r := <-f.put:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no failure record published", what)
	}
	return store.Failure{}
}

// A wake whose allocations all fail: the reason is published, the count goes back to 0,
// nothing wakes it during the backoff (activations and ticks with held requests alike),
// the next wake after it that fails backs off twice as long, and an instance that becomes
// ready clears the record and the backoff.
func TestFailedWakeIsPublishedAndBackedOff(t *testing.T) {
	h := newHarness(t)
	allocs, fails := h.withFailureWatch()
	allocs.stderr = "boom: config missing\n"
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	cfg := revCfg("svc-00001", func(c *revmeta.Config) { c.SpecHash = "abc" })
	job := h.nomad.add(cfg, 0)
	key := revKey{"default", "svc-00001"}
	h.ticks(2)
	waitParked(t, gw, 0)

	// A request is held: the activation wakes it, and the allocation fails.
	gw.Set("default", "svc-00001", 0, 1)
	gw.Activate(gauges.Activation{Namespace: "default", Revision: "svc-00001", Held: 1})
	waitScale(t, h, 1, "activation")
	i1 := h.nomad.nextIndex()
	allocs.set(alloc("a1", i1, "run", "pending"))
	allocs.set(alloc("a1", i1, "run", "failed", terminated(3), notRestarting))
	rec := waitPut(t, fails, "first failure")
	at := h.clock.Now()
	if rec.Reason != "boom: config missing (exit 3)" || rec.Attempt != 1 || rec.RetryAfter != 10 ||
		!rec.RetryAt.Equal(at.Add(10*time.Second)) || rec.SpecHash != "abc" || rec.Revision != "svc-00001" {
		t.Fatalf("record %+v", rec)
	}
	c := waitScale(t, h, 0, "after the failure")
	if !strings.Contains(c.msg, "boom: config missing (exit 3)") || c.meta["rouse.reason"] != "revision_failed" {
		t.Fatalf("the scale to zero says %q %v", c.msg, c.meta)
	}
	if h.nomad.count(job) != 0 {
		t.Fatal("count not back at 0")
	}

	// During the backoff: an activation does nothing, ticks with held requests do nothing.
	n := len(h.nomad.scaleCalls())
	seq := gw.Activate(gauges.Activation{Namespace: "default", Revision: "svc-00001", Held: 1})
	waitParked(t, gw, seq)
	h.ticks(4) // 8 s of the 10 s
	if calls := h.nomad.scaleCalls(); len(calls) != n {
		t.Fatalf("woken during its backoff: %v", calls[n:])
	}
	h.s.mu.Lock()
	reason := h.s.table.byRev[key].last.Reason
	h.s.mu.Unlock()
	if reason != kpa.Failed {
		t.Fatalf("decision reason during the backoff: %s", reason)
	}

	// Past it, the held request wakes it again; it fails again: 20 s this time.
	h.ticks(1)
	waitScale(t, h, 1, "after the backoff")
	i2 := h.nomad.nextIndex()
	allocs.set(alloc("a1", i1, "stop", "failed"), alloc("a2", i2, "run", "failed", terminated(3), notRestarting))
	rec = waitPut(t, fails, "second failure")
	if rec.Attempt != 2 || rec.RetryAfter != 20 {
		t.Fatalf("second record %+v", rec)
	}
	waitScale(t, h, 0, "after the second failure")

	// Past that one, the config is fixed: the wake works and a gateway routes to it.
	h.ticks(11)
	waitScale(t, h, 1, "after the second backoff")
	allocs.set(alloc("a2", i2, "stop", "failed"), alloc("a3", h.nomad.nextIndex(), "run", "running"))
	gw.Set("default", "svc-00001", 0, 0)
	h.gws.setRaw(gatewayOf(gw), readyGateway(t, "gw-2", "default", "svc-00001"))
	h.ticks(1)
	if _, ok := fails.record(key); ok {
		t.Fatal("the record outlived a ready instance")
	}
	h.s.mu.Lock()
	r := h.s.table.byRev[key]
	attempts, failed := r.attempts, r.failure != nil
	h.s.mu.Unlock()
	if attempts != 0 || failed {
		t.Fatalf("after a ready instance: attempts %d, failure %v", attempts, failed)
	}
}

// A record a previous leader left is adopted (its revision stays at zero until RetryAt);
// one whose job is gone or was registered again is deleted.
func TestNewLeaderAdoptsFailureRecords(t *testing.T) {
	h := newHarness(t)
	_, fails := h.withFailureWatch()
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	a := h.nomad.add(revCfg("svc-00001", nil), 1)
	b := h.nomad.add(revCfg("svc-00002", nil), 0)
	h.nomad.mu.Lock()
	createA, createB := h.nomad.jobs[a].create, h.nomad.jobs[b].create
	h.nomad.mu.Unlock()
	now := h.clock.Now()
	for _, f := range []store.Failure{
		{Namespace: "default", Revision: "svc-00001", Reason: "boom", At: now, RetryAt: now.Add(20 * time.Second), Attempt: 2, JobCreateIndex: createA},
		{Namespace: "default", Revision: "svc-00002", Reason: "boom", At: now, RetryAt: now.Add(20 * time.Second), Attempt: 1, JobCreateIndex: createB + 7},
		{Namespace: "default", Revision: "gone-00001", Reason: "boom", At: now, RetryAt: now.Add(20 * time.Second), Attempt: 1},
	} {
		fails.recs[revKey{f.Namespace, f.Revision}] = f
	}
	h.s.mu.Lock()
	h.s.table.stored = h.s.loadFailures(h.ctx)
	h.s.mu.Unlock()
	gw.Set("default", "svc-00001", 0, 3)
	h.ticks(1)
	// The adopted one was at 1 (the old leader died before scaling it down): now 0.
	waitScale(t, h, 0, "adopted failure")
	if _, ok := fails.record(revKey{"default", "svc-00001"}); !ok {
		t.Fatal("the adopted record was deleted")
	}
	for _, k := range []revKey{{"default", "svc-00002"}, {"default", "gone-00001"}} {
		if _, ok := fails.record(k); ok {
			t.Errorf("stale record %s kept", k)
		}
	}
	h.s.mu.Lock()
	attempts := h.s.table.byRev[revKey{"default", "svc-00001"}].attempts
	h.s.mu.Unlock()
	if attempts != 2 {
		t.Fatalf("adopted attempts %d, want 2 (the next backoff doubles on)", attempts)
	}
}

// A failed revision whose job goes loses its record.
func TestDeletedJobLosesFailureRecord(t *testing.T) {
	h := newHarness(t)
	_, fails := h.withFailureWatch()
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", nil), 0)
	h.ticks(1)
	key := revKey{"default", "svc-00001"}
	now := h.clock.Now()
	f := store.Failure{Namespace: "default", Revision: "svc-00001", Reason: "boom", At: now, RetryAt: now.Add(time.Minute), Attempt: 1}
	fails.recs[key] = f
	h.s.mu.Lock()
	r := h.s.table.byRev[key]
	r.failure, r.failedUntil, r.attempts = &f, f.RetryAt, 1
	h.s.mu.Unlock()
	h.nomad.mu.Lock()
	delete(h.nomad.jobs, job)
	h.nomad.bump()
	h.nomad.mu.Unlock()
	h.ticks(1)
	poll.Until(t, 2*time.Second, "record deleted with its job", func() error {
		if _, ok := fails.record(key); ok {
			return errors.New("still there")
		}
		return nil
	})
}
