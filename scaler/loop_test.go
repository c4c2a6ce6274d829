package scaler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/fakegateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/scaler/kpa"
)

type harness struct {
	t     *testing.T
	s     *Scaler
	clock *clock.Fake
	nomad *fakeNomad
	gws   *fakeGateways
	logs  *observer.ObservedLogs
	ctx   context.Context
}

func newHarness(t *testing.T) *harness {
	core, logs := observer.New(zap.DebugLevel)
	h := &harness{t: t, clock: clock.NewFake(time.Unix(1_700_000_000, 0)), nomad: newFakeNomad(),
		gws: &fakeGateways{}, logs: logs}
	s, err := newScaler(Config{Logger: zap.New(core), Clock: h.clock, ID: "test", AdminAddr: "127.0.0.1:0"}, h.nomad, h.gws)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); s.stopPollers(); s.admin.Close() })
	h.ctx = ctx
	s.table = newTable(kpa.Options{Granularity: s.cfg.Tick}, s.log)
	return h
}

// ticks steps the clock a tick at a time, running the leader's tick each time.
func (h *harness) ticks(n int) {
	for range n {
		h.clock.Step(h.s.cfg.Tick)
		h.s.tick(h.ctx, h.s.listJobs)
	}
}

func TestLoopScalesUpThenToZero(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", nil), 1)

	gw.Set("default", "svc-00001", 300, 0) // 300 / 70 → 5
	h.ticks(1)
	if got := h.nomad.count(job); got != 5 {
		t.Fatalf("want 5 after a tick of 300 in flight (panic), got %d", got)
	}
	h.ticks(10)
	if got := h.nomad.count(job); got != 5 {
		t.Fatalf("steady: want 5, got %d", got)
	}
	gw.Set("default", "svc-00001", 0, 0)
	// Window 10 s + grace 4 s, with the scale-down rate halving on the way.
	var zeroAfter time.Duration
	for i := 1; i <= 30; i++ {
		h.ticks(1)
		if h.nomad.count(job) == 0 {
			zeroAfter = time.Duration(i) * h.s.cfg.Tick
			break
		}
	}
	if zeroAfter < 14*time.Second || zeroAfter > 30*time.Second {
		t.Fatalf("zero after %v of idle; want after window+grace (14 s) and soon after", zeroAfter)
	}
	calls := h.nomad.scaleCalls()
	last := calls[len(calls)-1]
	if last.meta["rouse.reason"] != "to_zero" || !strings.Contains(last.msg, "→ 0") {
		t.Fatalf("scale call should say why: %q %v", last.msg, last.meta)
	}
	// No call when nothing changes.
	n := len(calls)
	h.ticks(5)
	if calls := h.nomad.scaleCalls(); len(calls) != n {
		t.Fatalf("scaled without a change: %v", calls[n:])
	}
}

func TestGatewayDownNeverScalesDown(t *testing.T) {
	h := newHarness(t)
	a, b := fakegateway.Start(t, "gw-a"), fakegateway.Start(t, "gw-b")
	h.gws.set(a, b)
	job := h.nomad.add(revCfg("svc-00001", nil), 1)
	a.Set("default", "svc-00001", 140, 0)
	b.Set("default", "svc-00001", 140, 0) // 280 → 4
	h.ticks(8)
	if got := h.nomad.count(job); got != 4 {
		t.Fatalf("want 4, got %d", got)
	}
	// b holds the traffic and stops answering while still registered healthy: a alone
	// reports zero. Nothing scales down, let alone to zero.
	a.Set("default", "svc-00001", 0, 0)
	b.SetFail(true)
	h.ticks(20)
	if got := h.nomad.count(job); got != 4 {
		t.Fatalf("scaled to %d while a gateway was failing", got)
	}
	if h.logs.FilterMessageSnippet("gateway left out").Len() == 0 {
		t.Fatal("no warning for the failing gateway")
	}
	// But scaling up continues from the others.
	a.Set("default", "svc-00001", 600, 0)
	h.ticks(2)
	if got := h.nomad.count(job); got < 9 {
		t.Fatalf("scale-up from the remaining gateway: want ≥ 9, got %d", got)
	}
	// Consul drops b from the healthy list: after a window of complete data, down again.
	h.gws.set(a)
	a.Set("default", "svc-00001", 70, 0)
	h.ticks(30)
	if got := h.nomad.count(job); got != 1 {
		t.Fatalf("after the failed gateway left: want 1, got %d", got)
	}
}

func TestNoGatewaysHoldsCounts(t *testing.T) {
	h := newHarness(t)
	h.gws.setRaw(deadGateway(t))
	job := h.nomad.add(revCfg("svc-00001", nil), 3)
	h.ticks(30)
	if got := h.nomad.count(job); got != 3 {
		t.Fatalf("no gateway data must hold the count, got %d", got)
	}
	h.gws.setRaw() // none registered at all
	h.ticks(30)
	if got := h.nomad.count(job); got != 3 {
		t.Fatalf("no gateways must hold the count, got %d", got)
	}
}

func TestNewLeaderHoldsCountsUntilWindowFills(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", func(c *revmeta.Config) { c.Window = 20 * time.Second }), 6)
	// Idle revision at 6 when this replica takes over: nothing moves for a window.
	for i := 0; i < 9; i++ {
		h.ticks(1)
		if got := h.nomad.count(job); got != 6 {
			t.Fatalf("tick %d: new leader scaled before its window filled: %d", i, got)
		}
	}
	h.ticks(15)
	if got := h.nomad.count(job); got >= 6 {
		t.Fatalf("never scaled down after the window: %d", got)
	}
}

// waitParked waits until the scaler's /activations long poll waits at gw after seq
// (real HTTP): only then is an activation announced to a listening scaler.
func waitParked(t *testing.T, gw *fakegateway.Gateway, seq uint64) {
	t.Helper()
	poll.Until(t, 5*time.Second, fmt.Sprintf("the /activations long poll parked after %d", seq), func() error {
		if gw.Parked(seq) == 0 {
			return errors.New("no long poll waiting")
		}
		return nil
	})
}

func TestActivationPath(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", nil), 0)
	h.ticks(3) // learns the job at 0 and starts the long-poll
	if got := h.nomad.count(job); got != 0 {
		t.Fatalf("idle at zero moved: %d", got)
	}
	waitParked(t, gw, 0)
	start := time.Now()
	gw.Activate(gauges.Activation{Namespace: "default", Revision: "svc-00001", Held: 150})
	select {
	case c := <-h.nomad.scaled:
		lag := c.at.Sub(start)
		t.Logf("activation → Jobs.Scale in %v", lag)
		if c.count != 3 { // 150 / 70
			t.Fatalf("want 3 for 150 held, got %v", c)
		}
		if lag > 50*time.Millisecond {
			t.Fatalf("activation took %v, budget 50 ms", lag)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no scale-up from the activation signal")
	}
	// The next tick sees the held requests in the gauges and keeps it up.
	gw.Set("default", "svc-00001", 0, 150)
	h.ticks(1)
	if got := h.nomad.count(job); got < 3 {
		t.Fatalf("tick undid the activation: %d", got)
	}
	// A repeated answer for a revision already up does nothing. The scaler asks for the
	// next answer only once it has handled this one (re-read the count, scaled or not),
	// so once it is parked after seq, every call it would make has been made.
	n := len(h.nomad.scaleCalls())
	seq := gw.Activate(gauges.Activation{Namespace: "default", Revision: "svc-00001", Held: 1})
	waitParked(t, gw, seq)
	if calls := h.nomad.scaleCalls(); len(calls) != n {
		t.Fatalf("scaled again for a revision already up: %v", calls[n:])
	}
}

func TestScaleErrorsAreLoggedNotFatal(t *testing.T) {
	for _, tc := range []struct {
		err  string
		kind string
	}{
		{"Unexpected response code: 403 (Permission denied)", "acl_denied"},
		{"Unexpected response code: 400 (job scaling blocked due to active deployment)", "deployment_lock"},
		{"Unexpected response code: 404 (job not found)", "job_gone"},
		{"Unexpected response code: 500 (boom)", "error"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			h := newHarness(t)
			gw := fakegateway.Start(t, "gw-1")
			h.gws.set(gw)
			job := h.nomad.add(revCfg("svc-00001", nil), 1)
			h.nomad.scaleErr = errors.New(tc.err)
			gw.Set("default", "svc-00001", 300, 0)
			h.ticks(5)
			logs := h.logs.FilterMessageSnippet("could not scale revision").All()
			if len(logs) != 1 {
				t.Fatalf("want the error logged once, got %d", len(logs))
			}
			if k := logs[0].ContextMap()["kind"]; k != tc.kind {
				t.Fatalf("kind %v, want %s", k, tc.kind)
			}
			// Once Nomad accepts, the scaler catches up.
			h.nomad.mu.Lock()
			h.nomad.scaleErr = nil
			h.nomad.mu.Unlock()
			h.ticks(2)
			if got := h.nomad.count(job); got != 5 {
				t.Fatalf("after the error cleared: want 5, got %d", got)
			}
		})
	}
}

func TestBadMetaIsSkippedAndOthersScale(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	bad := revCfg("svc-00001", nil)
	badJob := h.nomad.add(bad, 1)
	h.nomad.jobs[badJob].meta[revmeta.KeyWindow] = "sixty"
	good := h.nomad.add(revCfg("svc-00002", nil), 1)
	gw.Set("default", "svc-00001", 300, 0)
	gw.Set("default", "svc-00002", 300, 0)
	h.ticks(3)
	if h.nomad.count(badJob) != 1 || h.nomad.count(good) != 5 {
		t.Fatalf("bad %d good %d", h.nomad.count(badJob), h.nomad.count(good))
	}
	if n := h.logs.FilterMessageSnippet("unusable autoscaling meta").Len(); n != 1 {
		t.Fatalf("want the bad meta logged once, got %d", n)
	}
}

func TestCountsReadOncePerChange(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	for i := range 20 {
		h.nomad.add(revCfg("svc-"+string(rune('a'+i)), nil), 1)
	}
	h.ticks(10)
	if h.nomad.counts != 20 {
		t.Fatalf("want one count read per job, got %d", h.nomad.counts)
	}
}

func TestAdminEndpoints(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	h.nomad.add(revCfg("svc-00001", nil), 1)
	gw.Set("default", "svc-00001", 300, 0)
	h.ticks(2)
	srv := &http.Server{Handler: h.s.Handler()}
	go srv.Serve(h.s.admin)
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get("http://" + h.s.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := get("/metrics")
	for _, want := range []string{
		`rouse_scaler_desired_instances{namespace="default",revision="svc-00001"} 5`,
		`rouse_scaler_ready_instances{namespace="default",revision="svc-00001"}`,
		`rouse_scaler_panic_mode{namespace="default",revision="svc-00001"} 1`,
		`rouse_scaler_decisions_total{reason="panic"}`,
		`rouse_scaler_scale_calls_total{direction="up",result="ok"} 1`,
		`rouse_scaler_tick_duration_seconds_count 2`,
		`rouse_scaler_excess_burst_capacity{namespace="default",revision="svc-00001"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if got := get("/healthz"); !strings.HasPrefix(got, "ok test") {
		t.Errorf("/healthz: %q", got)
	}
	if got := get("/decisions"); !strings.Contains(got, "default/svc-00001") || !strings.Contains(got, "panic") {
		t.Errorf("/decisions:\n%s", got)
	}
	if t.Failed() {
		t.Log(m)
	}
}

func TestJobWatchListsOnChangeAtMostOncePerTick(t *testing.T) {
	nomad := newFakeNomad()
	nomad.add(revCfg("svc-00001", nil), 1)
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	const tick = 2 * time.Second
	s, err := newScaler(Config{Tick: tick, ID: "w", Clock: clk}, nomad, &fakeGateways{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := s.startJobWatch(ctx)
	l, ok := w.jobs(ctx)
	if !ok || len(l.stubs) != 1 {
		t.Fatalf("first listing: %v %v", l.stubs, ok)
	}
	// After each listing the watch waits out the rest of its tick on the clock.
	waitingOutTick := func() {
		t.Helper()
		poll.Until(t, 5*time.Second, "the job watch waiting out its tick", func() error {
			if n := clk.Waiters(); n != 1 {
				return fmt.Errorf("%d timers armed", n)
			}
			return nil
		})
	}
	listings := func(want int) {
		t.Helper()
		if got, _ := nomad.listing(); got != want {
			t.Fatalf("%d listings, want %d", got, want)
		}
	}
	waitingOutTick()
	listings(1)

	// Quiet: past the tick, the next listing is a blocking query that waits for a change,
	// however long; no timer is armed, so only Nomad can wake it.
	clk.Step(tick)
	poll.Until(t, 5*time.Second, "a blocking list of an unchanged cluster", func() error {
		if lists, blocked := nomad.listing(); lists != 2 || blocked != 1 {
			return fmt.Errorf("%d listings, %d blocked", lists, blocked)
		}
		return nil
	})
	clk.Step(100 * tick)
	if n := clk.Waiters(); n != 0 {
		t.Fatalf("%d timers armed while the blocking list waits", n)
	}
	listings(2)

	// A change answers the blocking query. That query outlasted the tick, so the next
	// one starts at once, and waits.
	nomad.add(revCfg("svc-00002", nil), 1)
	poll.Until(t, 5*time.Second, "the new job listed, and the next blocking list waiting", func() error {
		l, _ := w.jobs(ctx)
		if lists, blocked := nomad.listing(); len(l.stubs) != 2 || lists != 3 || blocked != 1 {
			return fmt.Errorf("%d jobs listed; %d listings, %d blocked", len(l.stubs), lists, blocked)
		}
		return nil
	})
	// The next change answers at once too, and then the watch waits out a whole tick.
	nomad.add(revCfg("svc-00003", nil), 1)
	waitingOutTick()
	listings(3)

	// A cluster that changes all the time is listed once per tick: the changes of a tick
	// land while the watch waits it out, and one listing takes them all.
	for i := range 5 {
		before, _ := nomad.listing()
		for j := range 3 {
			nomad.add(revCfg(fmt.Sprintf("svc-x%d-%d", i, j), nil), 1)
		}
		listings(before) // the watch waits on the clock, which has not moved
		clk.Step(tick)
		waitingOutTick()
		listings(before + 1)
	}
	if l, _ := w.jobs(ctx); len(l.stubs) != 3+5*3 {
		t.Fatalf("%d jobs listed, want %d", len(l.stubs), 3+5*3)
	}
}

// A job purged and registered again under the same ID (rouse delete, then apply) is a
// new revision: the old job's traffic must not scale it.
func TestRecreatedJobStartsFresh(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", nil), 1)
	gw.Set("default", "svc-00001", 300, 0)
	h.ticks(3)
	if got := h.nomad.count(job); got != 5 {
		t.Fatalf("want 5 under load, got %d", got)
	}
	gw.Set("default", "svc-00001", 0, 0)
	h.nomad.mu.Lock()
	delete(h.nomad.jobs, job)
	h.nomad.mu.Unlock()
	h.nomad.add(revCfg("svc-00001", nil), 1)
	h.ticks(3)
	if got := h.nomad.count(job); got != 1 {
		t.Fatalf("the new job was scaled to %d from the old one's windows; want its initial 1", got)
	}
}

// A count changed from outside between two ticks (nomad job scale … 0) must not leave held
// requests waiting for the next tick: the activation re-reads the count from Nomad.
func TestActivationAfterOutsideScaleDown(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", nil), 1)
	gw.Set("default", "svc-00001", 5, 0)
	h.ticks(3) // knows the job at 1, wants 1
	h.nomad.mu.Lock()
	j := h.nomad.jobs[job]
	j.count, j.running, j.index = 0, 0, h.nomad.bump()
	h.nomad.mu.Unlock()
	waitParked(t, gw, 0)
	start := time.Now()
	gw.Activate(gauges.Activation{Namespace: "default", Revision: "svc-00001", Held: 1})
	select {
	case c := <-h.nomad.scaled:
		t.Logf("outside scale-down → activation → Jobs.Scale in %v", c.at.Sub(start))
		if c.count != 1 {
			t.Fatalf("want 1 for 1 held, got %v", c)
		}
	case <-time.After(time.Second):
		t.Fatal("held requests wait for the next tick after an outside scale-down")
	}
}
