package scaler

import (
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/harness/fakegateway"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// activation_scale = 3: one held request wakes three instances (through job meta, the
// activation path and the ticks after it).
func TestActivationScaleWakesThree(t *testing.T) {
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", func(c *revmeta.Config) { c.ActivationScale = 3 }), 0)
	h.ticks(3)
	waitParked(t, gw, 0)
	gw.Activate(held("svc-00001", 1))
	c := waitScale(t, h, 3, "activation with activation_scale = 3")
	if c.meta["rouse.reason"] != kpa.Activate.String() {
		t.Fatalf("scaled for %v, want the activation", c.meta["rouse.reason"])
	}
	// The ticks keep three while the request is there, and while the window remembers it.
	gw.Set("default", "svc-00001", 0, 1)
	h.ticks(1)
	gw.Set("default", "svc-00001", 1, 0)
	h.ticks(3)
	if got := h.nomad.count(job); got != 3 {
		t.Fatalf("with one request in flight: want 3, got %d", got)
	}
	// Without traffic it still goes to zero.
	gw.Set("default", "svc-00001", 0, 0)
	h.ticks(20)
	if got := h.nomad.count(job); got != 0 {
		t.Fatalf("activation_scale kept it from zero: %d", got)
	}
}

// scale_down_delay = 20s: after the load stops the count stays for the delay, then goes
// down as it would have, and to zero after the grace.
func TestScaleDownDelayHoldsCount(t *testing.T) {
	const delay = 20 * time.Second
	h := newHarness(t)
	gw := fakegateway.Start(t, "gw-1")
	h.gws.set(gw)
	job := h.nomad.add(revCfg("svc-00001", func(c *revmeta.Config) { c.ScaleDownDelay = delay }), 1)
	gw.Set("default", "svc-00001", 300, 0) // 300 / 70 → 5
	h.ticks(11)
	if got := h.nomad.count(job); got != 5 {
		t.Fatalf("want 5 under load, got %d", got)
	}
	gw.Set("default", "svc-00001", 0, 0)
	tick := h.s.cfg.Tick
	var downAfter, zeroAfter time.Duration
	for i := 1; i <= 60 && zeroAfter == 0; i++ {
		h.ticks(1)
		n := h.nomad.count(job)
		if n < 5 && downAfter == 0 {
			downAfter = time.Duration(i) * tick
		}
		if n == 0 {
			zeroAfter = time.Duration(i) * tick
		}
	}
	// Counted from the last tick that saw the load: the count goes down a delay later.
	if downAfter != delay {
		t.Fatalf("first scale-down %v after the last tick with load, want %v", downAfter, delay)
	}
	// Window 10 s, then the delay, then the grace (4 s).
	if zeroAfter < 10*time.Second+delay || zeroAfter > 10*time.Second+delay+4*time.Second+2*tick {
		t.Fatalf("zero after %v of idle; want after window + delay + grace (%v)", zeroAfter, 10*time.Second+delay+4*time.Second)
	}
	counts := map[string]bool{}
	for _, c := range h.nomad.scaleCalls() {
		counts[c.meta["rouse.reason"].(string)] = true
	}
	if counts[kpa.Delay.String()] {
		t.Fatalf("a scale call for holding the count: %v", h.nomad.scaleCalls())
	}
}
