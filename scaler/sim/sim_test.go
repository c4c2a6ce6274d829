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
