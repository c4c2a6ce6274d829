package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// TestScaleKnobs: Knative's activation_scale and scale_down_delay on real Nomad. A wake
// with activation_scale = 3 starts three instances at once; after the load drops, the
// count stays for scale_down_delay before it goes down, and the last instance goes only
// after window + delay + grace.
func TestScaleKnobs(t *testing.T) {
	const rev = "e2e-00006"
	const delay = 8 * time.Second
	cfg := revConfig(rev) // window 6 s, grace 3 s, 7 in flight per instance
	cfg.ActivationScale, cfg.ScaleDownDelay = 3, delay
	register(t, cfg, 0)
	a := startGateway(t, "gw-k")
	r := startReplica(t, "s-knobs")
	poll.Until(t, 20*time.Second, "s-knobs leads", leads(r))
	poll.Until(t, 10*time.Second, "s-knobs knowing "+rev+" and its long poll waiting at gw-k", func() error {
		if d := get(t, r, "/decisions"); !strings.Contains(d, rev) {
			return fmt.Errorf("/decisions:\n%s", d)
		}
		if a.Parked(0) == 0 {
			return errors.New("no /activations long poll waiting at gw-k")
		}
		return nil
	})

	// One held request wakes three, in one scaling event.
	a.set(rev, 0, 1)
	start := time.Now()
	a.activate(rev, 1)
	waitGroup(t, 5*time.Second, "activation 0 → 3", rev, func(c, _ int) bool { return c >= 1 })
	if ev := firstScaleUp(t, rev); *ev.Count != 3 || fmt.Sprint(ev.Meta["rouse.reason"]) != "activate" {
		t.Fatalf("first scale-up to %d (%v, %q), want 3 by the activation", *ev.Count, ev.Meta["rouse.reason"], ev.Message)
	}
	waitGroup(t, 60*time.Second, "3 running", rev, func(_, run int) bool { return run == 3 })
	t.Logf("activation of one request → 3 instances running in %v", time.Since(start))

	// One request in flight keeps the three.
	a.set(rev, 1, 0)
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if c, _ := groupCount(t, rev); c != 3 {
			t.Fatalf("count %d with a request in flight, want activation_scale's 3", c)
		}
	}

	// 40 in flight → 6; held past a window so the panic it starts is over.
	a.set(rev, 40, 0)
	waitGroup(t, 15*time.Second, "count 6", rev, func(c, _ int) bool { return c == 6 })
	waitGroup(t, 60*time.Second, "6 running", rev, func(_, run int) bool { return run == 6 })
	time.Sleep(8 * time.Second)
	if c, _ := groupCount(t, rev); c != 6 {
		t.Fatalf("count %d under steady load, want 6", c)
	}

	// 20 in flight wants 3: without the delay the stable window goes below 6 in ~2 s.
	a.set(rev, 20, 0)
	drop := time.Now()
	for time.Since(drop) < delay-1500*time.Millisecond {
		if c, _ := groupCount(t, rev); c != 6 {
			t.Fatalf("count %d %v after the load dropped, want 6 for scale_down_delay (%v)", c, time.Since(drop).Round(time.Millisecond), delay)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitGroup(t, 30*time.Second, "count 3 after the delay", rev, func(c, _ int) bool { return c == 3 })
	t.Logf("load 40 → 20: count 6 → 3 after %v (scale_down_delay %v)", time.Since(drop).Round(time.Millisecond), delay)

	// Idle: zero only after window + delay + grace.
	a.set(rev, 0, 0)
	idle := time.Now()
	waitGroup(t, 60*time.Second, "count 0", rev, func(c, _ int) bool { return c == 0 })
	zero := time.Since(idle)
	t.Logf("idle → count 0 in %v (window 6 s + delay %v + grace 3 s)", zero.Round(time.Millisecond), delay)
	if min := 6*time.Second + delay + 3*time.Second - 2*time.Second; zero < min { // a tick of slack each side
		t.Errorf("reached zero %v after the load stopped, want at least %v", zero, min)
	}
	st, _, err := cluster.Nomad.Jobs().ScaleStatus(rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, e := range st.TaskGroups[revmeta.Group].Events {
		events = append(events, fmt.Sprintf("%v:%v", *e.Count, e.Meta["rouse.reason"]))
	}
	t.Logf("scaling events (newest first): %v", events)
}
