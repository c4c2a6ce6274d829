package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// TestSimulation replays every trace with the defaults and checks the outcomes the README
// promises; the full table is in the log (go test -v ./scaler/sim).
func TestSimulation(t *testing.T) {
	var b strings.Builder
	rs := Table(&b, DefaultModel(), Traces(), Variants()[:1])
	t.Log("\n" + b.String())
	by := map[string]Result{}
	for _, r := range rs {
		by[r.Trace] = r
	}
	if r := by["steady"]; r.Waited != 0 || r.ScaleEvents != 0 {
		t.Errorf("steady load, right-sized: want no waits and no scaling, got %+v", r)
	}
	if r := by["ramp"]; float64(r.Waited) > 0.001*float64(r.Requests) || r.Peak != 9 {
		t.Errorf("ramp to 3000 rps (9 instances at 70): %+v", r)
	}
	if r := by["spike"]; r.Peak < 9 || r.WaitMax > 2500 {
		t.Errorf("spike ×10: want ≥ 9 instances, waits under a tick + start: %+v", r)
	}
	// Three bursts from zero: three cold starts, each waiting about the start time.
	m := DefaultModel()
	if r := by["idle"]; r.ColdStarts != 3 || r.WaitMax > float64((m.Start+m.Activate+10*time.Millisecond)/time.Millisecond) {
		t.Errorf("idle: want 3 cold starts, each within start+activation: %+v", r)
	}
}

func TestIdleReachesZero(t *testing.T) {
	cfg := revmeta.Defaults("default", "sim", "sim-00001")
	tr := Trace{Name: "one", Duration: 3 * time.Minute, Start: 1, RPS: func(t time.Duration) float64 {
		if t < 10*time.Second {
			return 20
		}
		return 0
	}}
	r := Run(DefaultModel(), tr, cfg)
	// 10 s of traffic, then a 60 s window and a 30 s grace: about 100 instance·s, not 180.
	if r.InstanceSec < 95 || r.InstanceSec > 110 {
		t.Fatalf("want ≈ 100 instance·s (window + grace after the last request), got %+v", r)
	}
}

// scale_down_delay holds instances through the gaps between bursts: no cold start after
// the first, paid for in instance·s; without it every burst after a 140 s gap starts cold.
func TestScaleDownDelayHoldsInstances(t *testing.T) {
	bursts := Trace{Name: "bursts", Duration: 10 * time.Minute, Start: 1, RPS: func(t time.Duration) float64 {
		if int(t.Seconds())%150 < 10 {
			return 50 // 10 s of traffic every 150 s
		}
		return 0
	}}
	drop := Trace{Name: "drop", Duration: 5 * time.Minute, Start: 9, RPS: func(t time.Duration) float64 {
		if t < 2*time.Minute {
			return 3000 // 9 instances
		}
		return 300 // 1
	}}
	plain := revmeta.Defaults("default", "sim", "sim-00001")
	delayed := plain
	delayed.ScaleDownDelay = 2 * time.Minute
	if err := delayed.Autoscaling.Validate(); err != nil {
		t.Fatal(err)
	}
	m := DefaultModel()
	p, d := Run(m, bursts, plain), Run(m, bursts, delayed)
	t.Logf("bursts: plain %+v\nbursts: delayed %+v", p, d)
	if p.ColdStarts != 3 || d.ColdStarts != 0 {
		t.Errorf("cold starts: %d without the delay (want 3), %d with it (want 0)", p.ColdStarts, d.ColdStarts)
	}
	if d.Waited != 0 || p.Waited == 0 {
		t.Errorf("waits: %d without the delay (cold starts), %d with it (want 0)", p.Waited, d.Waited)
	}
	if d.InstanceSec <= p.InstanceSec {
		t.Errorf("the delay should cost instance·s: %.0f with, %.0f without", d.InstanceSec, p.InstanceSec)
	}
	p, d = Run(m, drop, plain), Run(m, drop, delayed)
	t.Logf("drop: plain %+v\ndrop: delayed %+v", p, d)
	// 9 held for about 2 more minutes than the undelayed descent: ≈ 8 × 120 instance·s more.
	if extra := d.InstanceSec - p.InstanceSec; extra < 6*120 || extra > 9*120 {
		t.Errorf("the delay after a drop from 9 to 1 cost %.0f instance·s, want ≈ %d", extra, 8*120)
	}
	if d.Waited > p.Waited {
		t.Errorf("holding instances made requests wait: %d vs %d", d.Waited, p.Waited)
	}
}
