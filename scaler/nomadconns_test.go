package scaler

import (
	"fmt"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/fakegateway"
)

// Waking many revisions at once stays inside the budget of requests to Nomad. Before,
// every activation's Jobs.Scale and every waking revision's blocking allocation query went
// out at once: 120 and more, and Nomad (limits.http_max_conns_per_client, default 100)
// answered the rest 429 — measured by make bench-wake, a third of 100 wakes.
func TestManyWakesStayInsideNomadConnectionBudget(t *testing.T) {
	h := newHarness(t)
	allocs, _ := h.withFailureWatch()
	fl := &inFlight{}
	h.nomad.flight, h.nomad.scaleDelay, allocs.flight = fl, 20*time.Millisecond, fl
	gw := fakegateway.Start(t, "gw-1")
	h.leading(gw)
	const n = 120
	var acts []gauges.Activation
	for i := range n {
		rev := fmt.Sprintf("svc%03d-00001", i)
		h.nomad.add(revCfg(rev, nil), 0)
		acts = append(acts, held(rev, 1))
	}
	h.ticks(1) // lists them, at zero
	start := time.Now()
	gw.Activate(acts...)
	for i := range n {
		waitScale(t, h, 1, fmt.Sprintf("wake %d of %d", i+1, n))
	}
	took := time.Since(start)
	// Let the allocation watches pile up as they would.
	time.Sleep(200 * time.Millisecond)
	if p := fl.peak.Load(); p > DefaultMaxNomadConns {
		t.Fatalf("%d requests to Nomad in flight at once, budget %d", p, DefaultMaxNomadConns)
	}
	// 120 scales of 20 ms at up to 64 at once; the watches never hold the scales back.
	if took > 2*time.Second {
		t.Fatalf("%d wakes took %s", n, took)
	}
	t.Logf("%d wakes in %s, at most %d requests in flight", n, took.Round(time.Millisecond), fl.peak.Load())
}
