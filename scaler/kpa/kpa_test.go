package kpa

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/revmeta"
)

const tick = 2 * time.Second

var epoch = time.Unix(1_700_000_000, 0)

// cfg is Knative's defaults changed by mod; kpa trusts its settings, so they must be valid.
func cfg(mod func(*revmeta.Autoscaling)) revmeta.Autoscaling {
	c := revmeta.DefaultAutoscaling()
	if mod != nil {
		mod(&c)
	}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// point is one tick of a replay.
type point struct {
	at       time.Duration
	current  int // count before the decision
	decision Decision
}

func (p point) String() string {
	return fmt.Sprintf("t=%v cur=%d → %d %s panic=%v", p.at, p.current, p.decision.Desired, p.decision.Reason, p.decision.Panic)
}

// replay steps a revision through a trace, one sample per tick, starting with `start`
// instances. Instances are ready the tick after they are asked for; trace returns ok=false
// for a tick with no data at all.
func replay(c revmeta.Autoscaling, start int, d time.Duration, trace func(at time.Duration) (Sample, bool)) []point {
	r := New(c, Options{Granularity: tick})
	current, ready := start, start
	var out []point
	for at := time.Duration(0); at <= d; at += tick {
		now := epoch.Add(at)
		if s, ok := trace(at); ok {
			r.Record(now, s)
		}
		dec := r.Decide(now, ready, current)
		out = append(out, point{at, current, dec})
		ready = current // what was asked last tick is up now
		current = dec.Desired
	}
	return out
}

func conc(v float64) func(time.Duration) (Sample, bool) {
	return func(time.Duration) (Sample, bool) { return Sample{Concurrency: v}, true }
}

func dump(ps []point) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func at(ps []point, t time.Duration) point {
	for _, p := range ps {
		if p.at == t {
			return p
		}
	}
	panic("no point at " + t.String())
}

func TestTraces(t *testing.T) {
	idleAfter := func(until time.Duration, v float64) func(time.Duration) (Sample, bool) {
		return func(at time.Duration) (Sample, bool) {
			if at < until {
				return Sample{Concurrency: v}, true
			}
			return Sample{}, true
		}
	}
	for _, tc := range []struct {
		name  string
		cfg   revmeta.Autoscaling
		start int
		dur   time.Duration
		trace func(time.Duration) (Sample, bool)
		check func(t *testing.T, ps []point)
	}{{
		name: "steady load settles at ceil(load / (target × utilization))", cfg: cfg(nil), start: 1, dur: 3 * time.Minute,
		trace: conc(300), // 300 / 70 → 5
		check: func(t *testing.T, ps []point) {
			for _, p := range ps[1:] {
				if p.decision.Desired != 5 {
					t.Fatalf("want 5 throughout, got %v", p)
				}
			}
			if p := ps[0]; !p.decision.Panic || p.decision.Desired != 5 {
				t.Fatalf("first tick: 300 on 1 instance is a panic to 5, got %v", p)
			}
			if p := ps[len(ps)-1]; p.decision.Panic {
				t.Fatalf("still panicking after a window of steady load: %v", p)
			}
		},
	}, {
		name: "ramp scales up step by step and never down", cfg: cfg(nil), start: 1, dur: 2 * time.Minute,
		trace: func(at time.Duration) (Sample, bool) { return Sample{Concurrency: 7 * at.Seconds()}, true }, // 0 → 840
		check: func(t *testing.T, ps []point) {
			for i := 1; i < len(ps); i++ {
				if ps[i].decision.Desired < ps[i-1].decision.Desired {
					t.Fatalf("went down during a ramp:\n%v\n%v", ps[i-1], ps[i])
				}
			}
			if got := ps[len(ps)-1].decision.Desired; got < 8 || got > 12 {
				t.Fatalf("end of ramp at 840: want about 12, got %d\n%s", got, dump(ps))
			}
		},
	}, {
		name: "spike panics within a tick, holds the peak, then decays at the scale-down rate",
		cfg:  cfg(nil), start: 1, dur: 5 * time.Minute,
		trace: func(at time.Duration) (Sample, bool) {
			if at >= 60*time.Second && at < 80*time.Second {
				return Sample{Concurrency: 700}, true
			}
			return Sample{Concurrency: 50}, true
		},
		check: func(t *testing.T, ps []point) {
			if p := at(ps, 58*time.Second); p.decision.Desired != 1 || p.decision.Panic {
				t.Fatalf("before the spike: %v", p)
			}
			if p := at(ps, 60*time.Second); !p.decision.Panic {
				t.Fatalf("spike tick: want panic, got %v", p)
			}
			// The panic window (6 s, three samples) is full of the spike two ticks later.
			if p := at(ps, 64*time.Second); p.decision.Desired != 10 {
				t.Fatalf("want 10 once the panic window is full of the spike, got %v\n%s", p, dump(ps))
			}
			// The spike ends at 80 s; panic holds 10 until a full window without panic
			// conditions has passed (they last held while ready lagged, around 62 s).
			for i, p := range ps {
				if p.decision.Panic && p.decision.Desired < ps[i-1].decision.Desired {
					t.Fatalf("panic must not scale down: %v\n%s", p, dump(ps))
				}
				if p.decision.Panic && p.at > 126*time.Second {
					t.Fatalf("panic outlived a window without its conditions: %v\n%s", p, dump(ps))
				}
			}
			if p := at(ps, 120*time.Second); p.decision.Desired != 10 {
				t.Fatalf("want the peak held at 120 s: %v", p)
			}
			var prev int
			for _, p := range ps {
				if p.at > 140*time.Second && p.decision.Desired < prev && p.decision.Desired*2 < prev {
					t.Fatalf("scale-down faster than rate 2: %d → %v", prev, p)
				}
				prev = p.decision.Desired
			}
			if p := ps[len(ps)-1]; p.decision.Desired != 1 || p.decision.Panic {
				t.Fatalf("after the spike: want 1, not panicking: %v\n%s", p, dump(ps))
			}
		},
	}, {
		name:  "idle goes to zero a window plus the grace after the last request, not before",
		cfg:   cfg(func(c *revmeta.Autoscaling) { c.Window = 20 * time.Second; c.ScaleToZeroGrace = 10 * time.Second }),
		start: 1, dur: 90 * time.Second,
		trace: idleAfter(30*time.Second, 10),
		check: func(t *testing.T, ps []point) {
			// Last traffic sampled at 28 s; the window (t-20 s, t] holds it until 46 s, so
			// zero is wanted from 48 s and allowed at 48 + 10 s.
			for _, p := range ps {
				if p.at < 58*time.Second && p.decision.Desired != 1 {
					t.Fatalf("left 1 before window+grace: %v\n%s", p, dump(ps))
				}
			}
			if p := at(ps, 48*time.Second); p.decision.Reason != Grace {
				t.Fatalf("want grace at 48 s, got %v", p)
			}
			if p := at(ps, 58*time.Second); p.decision.Desired != 0 || p.decision.Reason != ToZero {
				t.Fatalf("want to_zero at 58 s, got %v\n%s", p, dump(ps))
			}
			for _, p := range ps {
				if p.at > 58*time.Second && p.decision.Desired != 0 {
					t.Fatalf("came back from zero without traffic: %v", p)
				}
			}
		},
	}, {
		name: "held requests alone keep it from zero",
		cfg: cfg(func(c *revmeta.Autoscaling) {
			c.Metric, c.Target = revmeta.MetricRPS, 200
			c.Window, c.ScaleToZeroGrace = 10*time.Second, 4*time.Second
		}),
		start: 1, dur: 60 * time.Second,
		trace: func(time.Duration) (Sample, bool) { return Sample{Held: 1}, true }, // rps 0, a request held
		check: func(t *testing.T, ps []point) {
			for _, p := range ps {
				if p.decision.Desired == 0 {
					t.Fatalf("zero while a request is held: %v", p)
				}
			}
		},
	}, {
		name: "min > 0 never goes to zero", cfg: cfg(func(c *revmeta.Autoscaling) {
			c.Min, c.Window, c.ScaleToZeroGrace = 2, 10*time.Second, 2*time.Second
		}),
		start: 4, dur: 2 * time.Minute, trace: conc(0),
		check: func(t *testing.T, ps []point) {
			for _, p := range ps {
				if p.decision.Desired < 2 {
					t.Fatalf("below min: %v", p)
				}
			}
			if p := ps[len(ps)-1]; p.decision.Desired != 2 || p.decision.Reason != AtMin {
				t.Fatalf("want 2 at min: %v", p)
			}
		},
	}, {
		name: "max clamps panic and stable", cfg: cfg(func(c *revmeta.Autoscaling) { c.Max = 3 }),
		start: 1, dur: 30 * time.Second, trace: conc(10_000),
		check: func(t *testing.T, ps []point) {
			for _, p := range ps {
				if p.decision.Desired != 3 || p.decision.Reason != AtMax {
					t.Fatalf("want 3 at max: %v", p)
				}
			}
		},
	}, {
		name: "scale-up rate doubles at most", cfg: cfg(func(c *revmeta.Autoscaling) { c.MaxScaleUpRate = 2 }),
		start: 1, dur: 12 * time.Second, trace: conc(7_000), // wants 100
		check: func(t *testing.T, ps []point) {
			want := []int{2, 2, 4, 4, 8, 8, 16} // ready lags a tick behind the count
			for i, p := range ps {
				if p.decision.Desired != want[i] {
					t.Fatalf("tick %d: want %d got %v\n%s", i, want[i], p, dump(ps))
				}
			}
		},
	}, {
		name: "scale-down rate halves at most", cfg: cfg(func(c *revmeta.Autoscaling) { c.Window = 10 * time.Second }),
		start: 16, dur: 40 * time.Second,
		trace: func(at time.Duration) (Sample, bool) {
			if at < 10*time.Second {
				return Sample{Concurrency: 16 * 70}, true
			}
			return Sample{Concurrency: 35}, true
		},
		check: func(t *testing.T, ps []point) {
			for i := 1; i < len(ps); i++ {
				prev, cur := ps[i-1].decision.Desired, ps[i].decision.Desired
				if cur < prev && cur < (prev+1)/2-1 {
					t.Fatalf("too steep: %d → %v\n%s", prev, ps[i], dump(ps))
				}
			}
			if got := ps[len(ps)-1].decision.Desired; got != 1 {
				t.Fatalf("want 1 at the end, got %d\n%s", got, dump(ps))
			}
		},
	}, {
		name: "a new revision keeps its initial count for a window", cfg: cfg(func(c *revmeta.Autoscaling) {
			c.Window, c.ScaleToZeroGrace = 20*time.Second, 0
		}),
		start: 3, dur: 60 * time.Second, trace: conc(0),
		check: func(t *testing.T, ps []point) {
			for _, p := range ps {
				if p.at < 20*time.Second && (p.decision.Desired != 3 || p.decision.Reason != Warming) {
					t.Fatalf("scaled down while warming: %v", p)
				}
			}
			if p := ps[len(ps)-1]; p.decision.Desired != 0 {
				t.Fatalf("idle revision did not reach zero: %v\n%s", p, dump(ps))
			}
		},
	}, {
		name:  "missing data holds the count, then restarts the idle clock",
		cfg:   cfg(func(c *revmeta.Autoscaling) { c.Window, c.ScaleToZeroGrace = 10*time.Second, 4*time.Second }),
		start: 2, dur: 100 * time.Second,
		trace: func(at time.Duration) (Sample, bool) {
			switch {
			case at < 20*time.Second:
				return Sample{Concurrency: 100}, true
			case at < 60*time.Second:
				return Sample{}, false // no gateway answered at all
			}
			return Sample{}, true
		},
		check: func(t *testing.T, ps []point) {
			for _, p := range ps {
				if p.at >= 26*time.Second && p.at < 60*time.Second && (p.decision.Desired != 2 || p.decision.Reason != NoData) {
					t.Fatalf("want no_data hold at 2: %v\n%s", p, dump(ps))
				}
				// The gap counts as unsure data: a window before scaling down, and the
				// grace after that before zero.
				if p.at >= 60*time.Second && p.at < 70*time.Second && p.decision.Desired < 2 {
					t.Fatalf("scaled down right after a gap: %v\n%s", p, dump(ps))
				}
				if p.at < 74*time.Second && p.decision.Desired == 0 {
					t.Fatalf("zero too early after a gap: %v\n%s", p, dump(ps))
				}
			}
			if p := ps[len(ps)-1]; p.decision.Desired != 0 {
				t.Fatalf("want zero in the end: %v\n%s", p, dump(ps))
			}
		},
	}, {
		name:  "a partial sample scales up but never down or to zero",
		cfg:   cfg(func(c *revmeta.Autoscaling) { c.Window, c.ScaleToZeroGrace = 10*time.Second, 2*time.Second }),
		start: 4, dur: 60 * time.Second,
		trace: func(at time.Duration) (Sample, bool) {
			switch {
			case at < 10*time.Second:
				return Sample{Concurrency: 4 * 70}, true
			case at < 30*time.Second:
				return Sample{Partial: true}, true // the gateway with the traffic is down
			case at < 32*time.Second:
				return Sample{Concurrency: 8 * 70, Partial: true}, true
			}
			return Sample{}, true
		},
		check: func(t *testing.T, ps []point) {
			for _, p := range ps {
				if p.at < 40*time.Second && p.decision.Desired < 4 {
					t.Fatalf("scaled down on partial data: %v\n%s", p, dump(ps))
				}
			}
			if p := at(ps, 30*time.Second); p.decision.Desired < 8 {
				t.Fatalf("partial data showing more load must scale up: %v", p)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, replay(tc.cfg, tc.start, tc.dur, tc.trace))
		})
	}
}

func TestActivateFromZero(t *testing.T) {
	c := cfg(func(c *revmeta.Autoscaling) { c.Window, c.ScaleToZeroGrace = 10*time.Second, 2*time.Second })
	r := New(c, Options{Granularity: tick})
	now := epoch
	for i := 0; i < 20; i++ { // a long idle at zero
		now = now.Add(tick)
		r.Record(now, Sample{})
		if d := r.Decide(now, 0, 0); d.Desired != 0 {
			t.Fatalf("idle at zero moved: %+v", d)
		}
	}
	now = now.Add(300 * time.Millisecond)
	if n := r.Activate(now, 150); n != 3 { // 150 / 70
		t.Fatalf("activate 150 held: want 3, got %d", n)
	}
	// The next tick still sees the burst (gauges report the held requests) and must not
	// undo the fast path.
	now = now.Add(1700 * time.Millisecond)
	r.Record(now, Sample{Concurrency: 150, Held: 150})
	if d := r.Decide(now, 0, 3); d.Desired < 3 {
		t.Fatalf("tick after activation scaled down: %+v", d)
	}
	// Even an activation of one request with nothing else keeps one instance for the grace.
	r2 := New(c, Options{Granularity: tick})
	now = epoch
	for i := 0; i < 10; i++ {
		now = now.Add(tick)
		r2.Record(now, Sample{})
		r2.Decide(now, 0, 0)
	}
	if n := r2.Activate(now.Add(time.Second), 1); n != 1 {
		t.Fatalf("want 1, got %d", n)
	}
	now = now.Add(tick)
	r2.Record(now, Sample{})
	if d := r2.Decide(now, 0, 1); d.Desired != 1 {
		t.Fatalf("activated revision dropped at once: %+v", d)
	}
	// Max still clamps the fast path, Min floors it.
	c.Max = 2
	if n := New(c, Options{}).Activate(now, 1000); n != 2 {
		t.Fatalf("max: want 2, got %d", n)
	}
	c.Max, c.Min = 0, 4
	if n := New(c, Options{}).Activate(now, 1); n != 4 {
		t.Fatalf("min: want 4, got %d", n)
	}
}

func TestExcessBurstCapacity(t *testing.T) {
	for _, tc := range []struct {
		tbc   float64
		ready int
		load  float64
		want  float64
	}{
		{200, 3, 50, 3*100 - 200 - 50},
		{200, 1, 50, -150},
		{0, 3, 50, 0},
		{-1, 3, 50, -1},
	} {
		r := New(cfg(func(c *revmeta.Autoscaling) { c.TargetBurstCapacity = tc.tbc }), Options{Granularity: tick})
		r.Record(epoch, Sample{Concurrency: tc.load})
		if d := r.Decide(epoch, tc.ready, tc.ready); d.ExcessBurstCapacity != tc.want {
			t.Errorf("tbc %v ready %d load %v: EBC %v, want %v", tc.tbc, tc.ready, tc.load, d.ExcessBurstCapacity, tc.want)
		}
	}
}

func TestRPSMetric(t *testing.T) {
	c := cfg(func(c *revmeta.Autoscaling) { c.Metric, c.Target = revmeta.MetricRPS, 100 })
	ps := replay(c, 1, time.Minute, func(time.Duration) (Sample, bool) {
		return Sample{RPS: 700, Concurrency: 1}, true // scales on RPS, not concurrency
	})
	if got := ps[len(ps)-1].decision.Desired; got != 10 {
		t.Fatalf("700 rps at 100×0.7: want 10, got %d", got)
	}
}

func TestNoDataAtStartHoldsAndClamps(t *testing.T) {
	r := New(cfg(func(c *revmeta.Autoscaling) { c.Min = 2 }), Options{Granularity: tick})
	if d := r.Decide(epoch, 0, 0); d.Desired != 2 || d.Reason != AtMin {
		t.Fatalf("min applies even without data: %+v", d)
	}
	r = New(cfg(nil), Options{Granularity: tick})
	if d := r.Decide(epoch, 5, 5); d.Desired != 5 || d.Reason != NoData {
		t.Fatalf("want hold at 5: %+v", d)
	}
}

func TestLongWindowBucketsBounded(t *testing.T) {
	r := New(cfg(func(c *revmeta.Autoscaling) { c.Window = time.Hour }), Options{Granularity: tick})
	if len(r.win.b) > maxBuckets {
		t.Fatalf("%d buckets", len(r.win.b))
	}
	r.Record(epoch, Sample{Concurrency: 140})
	if d := r.Decide(epoch, 1, 1); d.Stable != 140 {
		t.Fatalf("%+v", d)
	}
}

func TestReasonNames(t *testing.T) {
	for r := Reason(0); r < NumReasons; r++ {
		if r.String() == "" || r.String() == "unknown" {
			t.Fatalf("reason %d has no name", r)
		}
	}
}

// TestJobMetaDefaultsReachKPA follows a revision's job meta to the decider: a setting the
// meta leaves out, leaves empty or writes as zero (what Compile wrote for a Spec built in Go
// without its defaults) must reach kpa as Knative's default, the one revmeta declares, and
// not as a default of kpa's own (it used to make TargetUtilization 1, not 0.70).
func TestJobMetaDefaultsReachKPA(t *testing.T) {
	base := map[string]string{revmeta.KeyNamespace: "default", revmeta.KeyService: "hello", revmeta.KeyRevision: "hello-00001"}
	with := func(kv map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range kv {
			m[k] = v
		}
		return m
	}
	unset := func(v string) map[string]string {
		return map[string]string{
			revmeta.KeyTarget: v, revmeta.KeyTargetUtilization: v, revmeta.KeyPanicWindowPct: v,
			revmeta.KeyPanicThresholdPct: v, revmeta.KeyMaxScaleUpRate: v, revmeta.KeyMaxScaleDownRate: v,
		}
	}
	zero := unset("0")
	zero[revmeta.KeyWindow] = "0s"
	want := revmeta.Defaults("default", "hello", "hello-00001")
	for _, tc := range []struct {
		name string
		meta map[string]string
	}{
		{"keys missing (an older or hand-written job)", base},
		{"values empty", with(unset(""))},
		{"values zero (a Spec compiled without its defaults)", with(zero)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := revmeta.FromMeta(tc.meta)
			if err != nil {
				t.Fatal(err)
			}
			r := New(c.Autoscaling, Options{Granularity: tick})
			if got := r.Config(); got != want.Autoscaling {
				t.Errorf("kpa decides with\n %+v\nwant\n %+v", got, want)
			}
			if n := r.Activate(epoch, 150); n != 3 {
				t.Errorf("150 held at target 100 × utilization 0.70: want 3 instances, got %d", n)
			}
		})
	}
}
