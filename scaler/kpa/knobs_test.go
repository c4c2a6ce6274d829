package kpa

import (
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// step is a trace of concurrency v0 before `at` and v1 from then on.
func step(at time.Duration, v0, v1 float64) func(time.Duration) (Sample, bool) {
	return func(t time.Duration) (Sample, bool) {
		if t < at {
			return Sample{Concurrency: v0}, true
		}
		return Sample{Concurrency: v1}, true
	}
}

func firstAt(ps []point, from time.Duration, ok func(point) bool) (point, bool) {
	for _, p := range ps {
		if p.at >= from && ok(p) {
			return p, true
		}
	}
	return point{}, false
}

// Knative's scale-down-delay: the count is held at the most the load wanted within the
// delay; the descent afterwards is the undelayed one, shifted by the delay.
func TestScaleDownDelay(t *testing.T) {
	const delay = 30 * time.Second
	short := func(c *revmeta.Autoscaling) { c.Window = 10 * time.Second }
	withDelay := func(d time.Duration, grace time.Duration) revmeta.Autoscaling {
		return cfg(func(c *revmeta.Autoscaling) { short(c); c.ScaleDownDelay, c.ScaleToZeroGrace = d, grace })
	}
	for _, tc := range []struct {
		name  string
		check func(t *testing.T)
	}{{
		name: "a drop from 5 to 1 waits for the delay, then descends as it would have",
		check: func(t *testing.T) {
			drop := step(60*time.Second, 300, 70) // 300 / 70 → 5, then 1
			plain := replay(withDelay(0, 30*time.Second), 5, 3*time.Minute, drop)
			held := replay(withDelay(delay, 30*time.Second), 5, 3*time.Minute, drop)
			if p := at(plain, 60*time.Second); p.decision.Desired >= 5 {
				t.Fatalf("without a delay the drop scales down at once: %v", p)
			}
			for _, p := range held {
				if p.at >= 60*time.Second && p.at < 60*time.Second+delay-tick {
					if p.decision.Desired != 5 || p.decision.Reason != Delay {
						t.Fatalf("within the delay: want 5 (%s), got %v\n%s", Delay, p, dump(held))
					}
				}
			}
			down, ok := firstAt(held, 60*time.Second, func(p point) bool { return p.decision.Desired < 5 })
			if !ok || down.at != 58*time.Second+delay {
				t.Fatalf("want the first scale-down one delay after the load last wanted 5 (t=58s): %v\n%s", down, dump(held))
			}
			// After the delay the count follows the undelayed descent, shifted by as much.
			shift := down.at - 60*time.Second
			for _, p := range plain {
				if p.at < 60*time.Second || p.at+shift > 3*time.Minute {
					continue
				}
				if q := at(held, p.at+shift); q.decision.Desired != p.decision.Desired {
					t.Fatalf("shifted descent: undelayed %v, delayed %v", p, q)
				}
			}
			if p := held[len(held)-1]; p.decision.Desired != 1 {
				t.Fatalf("the delay never lets go: %v", p)
			}
		},
	}, {
		name: "it does not delay a scale-up",
		check: func(t *testing.T) {
			rise := step(60*time.Second, 70, 300)
			plain := replay(withDelay(0, 30*time.Second), 1, 2*time.Minute, rise)
			held := replay(withDelay(delay, 30*time.Second), 1, 2*time.Minute, rise)
			for i := range plain {
				if plain[i].decision.Desired != held[i].decision.Desired {
					t.Fatalf("a delay changed a scale-up:\n%v\n%v", plain[i], held[i])
				}
			}
		},
	}, {
		name: "it never scales up by itself: a count lowered from outside stays lowered",
		check: func(t *testing.T) {
			r := New(withDelay(delay, 30*time.Second), Options{Granularity: tick})
			now := epoch
			for range 10 {
				now = now.Add(tick)
				r.Record(now, Sample{Concurrency: 300})
				r.Decide(now, 5, 5)
			}
			for range 6 { // the stable window forgets the load; the delay still holds 5
				now = now.Add(tick)
				r.Record(now, Sample{Concurrency: 10})
			}
			if d := r.Decide(now, 2, 2); d.Desired != 2 || d.Reason != Delay || r.delay.max() != 5 {
				t.Fatalf("want held at 2 by the delay: %+v, delay max %d", d, r.delay.max())
			}
		},
	}, {
		name: "it holds the last instance; the grace to zero starts after it",
		check: func(t *testing.T) {
			idle := step(40*time.Second, 20, 0)
			const grace = 10 * time.Second
			plain := replay(withDelay(0, grace), 1, 3*time.Minute, idle)
			held := replay(withDelay(delay, grace), 1, 3*time.Minute, idle)
			zero := func(p point) bool { return p.decision.Desired == 0 }
			z0, ok0 := firstAt(plain, 0, zero)
			z1, ok1 := firstAt(held, 0, zero)
			if !ok0 || !ok1 || z0.decision.Reason != ToZero || z1.decision.Reason != ToZero {
				t.Fatalf("both go to zero: %v / %v\n%s", z0, z1, dump(held))
			}
			// The delay runs from the last tick the load wanted one (a tick before the stable
			// window first wanted zero, where the grace starts without a delay).
			if got := z1.at - z0.at; got != delay-tick {
				t.Fatalf("zero %v later with the delay, want %v\n%s", got, delay-tick, dump(held))
			}
			if p := at(held, z0.at); p.decision.Desired != 1 || p.decision.Reason != Delay {
				t.Fatalf("held at the undelayed zero: %v", p)
			}
		},
	}, {
		name: "a panic's peak is held for the delay after the panic ends",
		check: func(t *testing.T) {
			spike := func(at time.Duration) (Sample, bool) {
				if at >= 20*time.Second && at < 24*time.Second {
					return Sample{Concurrency: 700}, true
				}
				return Sample{Concurrency: 50}, true
			}
			plain := replay(withDelay(0, 30*time.Second), 1, 2*time.Minute, spike)
			held := replay(withDelay(delay, 30*time.Second), 1, 2*time.Minute, spike)
			end, ok := firstAt(plain, 24*time.Second, func(p point) bool { return !p.decision.Panic })
			if !ok {
				t.Fatalf("the panic never ended\n%s", dump(plain))
			}
			peak := at(held, end.at-tick).decision.Desired
			if p := at(held, end.at+delay-2*tick); p.decision.Desired != peak {
				t.Fatalf("peak %d not held for the delay after the panic: %v\n%s", peak, p, dump(held))
			}
			if p := held[len(held)-1]; p.decision.Desired != 1 {
				t.Fatalf("never came back down: %v", p)
			}
		},
	}, {
		name: "changing the delay resizes the window; the same delay keeps it",
		check: func(t *testing.T) {
			r := New(withDelay(delay, 30*time.Second), Options{Granularity: tick})
			r.Record(epoch, Sample{Concurrency: 300})
			r.Decide(epoch, 5, 5)
			r.SetConfig(withDelay(delay, 30*time.Second))
			if r.delay.max() != 5 {
				t.Fatalf("same delay lost the window: %+v", r.delay)
			}
			r.SetConfig(withDelay(time.Hour, 30*time.Second))
			if r.delay.max() != 0 || r.delay.k != maxBuckets {
				t.Fatalf("a 1h delay: %+v", r.delay)
			}
			r.SetConfig(withDelay(0, 30*time.Second))
			if r.delay.k != 0 {
				t.Fatalf("no delay: %+v", r.delay)
			}
		},
	}} {
		t.Run(tc.name, tc.check)
	}
}

func TestMaxWindow(t *testing.T) {
	w := newMaxWindow(10*time.Second, tick) // 5 buckets
	at := func(s int) time.Time { return epoch.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		sec, v, want int
	}{
		{0, 3, 3}, {2, 5, 5}, {2, 4, 5}, {4, 1, 5}, {6, 2, 5}, {8, 0, 5},
		{10, 0, 5}, {12, 0, 2}, // 5 (t=2) leaves the window at t=12; 2 (t=6) is next
		{16, 0, 0}, {18, 7, 7}, {17, 1, 7}, // a clock that steps back stays in the latest bucket
		{40, 1, 1},
	} {
		w.record(at(tc.sec), tc.v)
		if got := w.max(); got != tc.want {
			t.Fatalf("t=%ds record %d: max %d, want %d (%+v)", tc.sec, tc.v, got, tc.want, w.q)
		}
		if int64(len(w.q)) > w.k {
			t.Fatalf("%d entries for %d buckets", len(w.q), w.k)
		}
	}
	// A strictly falling series is the worst case: still at most k entries.
	w = newMaxWindow(time.Hour, tick)
	for i := range 5000 {
		w.record(at(2*i), 1_000_000-i)
		if int64(len(w.q)) > w.k || w.k > maxBuckets {
			t.Fatalf("%d entries, k %d", len(w.q), w.k)
		}
	}
}

// Knative's activation-scale: a wake from zero starts at least ActivationScale instances,
// and any traffic keeps at least that many; it does not keep a revision from zero.
func TestActivationScale(t *testing.T) {
	act := func(mod func(*revmeta.Autoscaling)) revmeta.Autoscaling {
		return cfg(func(c *revmeta.Autoscaling) {
			c.Window, c.ScaleToZeroGrace, c.ActivationScale = 10*time.Second, 2*time.Second, 3
			if mod != nil {
				mod(c)
			}
		})
	}
	for _, tc := range []struct {
		name string
		cfg  revmeta.Autoscaling
		held int64
		want int
	}{
		{"one request wakes three", act(nil), 1, 3},
		{"more than three's worth wakes what they need", act(nil), 1000, 15}, // 1000 / 70
		{"min above it wins", act(func(c *revmeta.Autoscaling) { c.Min = 5 }), 1, 5},
		{"max equal to it", act(func(c *revmeta.Autoscaling) { c.Max = 3 }), 1000, 3},
		{"rps metric", act(func(c *revmeta.Autoscaling) { c.Metric, c.Target = revmeta.MetricRPS, 100 }), 1, 3},
		{"unset is one", cfg(nil), 1, 1},
		{"one is one", cfg(func(c *revmeta.Autoscaling) { c.ActivationScale = 1 }), 1, 1},
	} {
		if got := New(tc.cfg, Options{Granularity: tick}).Activate(epoch, tc.held); got != tc.want {
			t.Errorf("%s: Activate(%d) = %d, want %d", tc.name, tc.held, got, tc.want)
		}
	}

	// The ticks after a wake keep three while there is traffic, then go to zero as usual.
	r := New(act(nil), Options{Granularity: tick})
	now := epoch
	for range 10 { // idle at zero
		now = now.Add(tick)
		r.Record(now, Sample{})
		r.Decide(now, 0, 0)
	}
	if n := r.Activate(now.Add(time.Second), 1); n != 3 {
		t.Fatalf("wake: %d", n)
	}
	current, ready := 3, 0
	for i := range 40 {
		now = now.Add(tick)
		busy := i < 15
		s := Sample{}
		if busy {
			s.Concurrency = 1
		}
		r.Record(now, s)
		d := r.Decide(now, ready, current)
		if busy && d.Desired != 3 {
			t.Fatalf("tick %d with traffic: want 3, got %+v", i, d)
		}
		current, ready = d.Desired, current
	}
	if current != 0 {
		t.Fatalf("activation_scale kept the revision from zero: %d", current)
	}

	// From zero through the tick (no activation): the tick scales up to three too.
	ps := replay(act(nil), 0, 20*time.Second, conc(1))
	if p := at(ps, 2*time.Second); p.decision.Desired != 3 {
		t.Fatalf("tick from zero: %v\n%s", p, dump(ps))
	}
}
