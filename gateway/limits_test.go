package gateway_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// One revision with concurrency = 1, burst capacity 2, timeout 2s: serializing, overflow
// and queue behaviour in one deployment.
var serialOnce sync.Once

func serialRevision(t *testing.T) {
	t.Helper()
	serialOnce.Do(func() {
		deploy(t, revision{svc: "serial", name: "serial-00001", count: 1, cfg: func(c *revmeta.Config) {
			c.Concurrency = 1
			c.TargetBurstCapacity = 2
			c.Timeout = 3 * time.Second
		}})
		setRoute(t, "serial", store.RouteTarget{Revision: "serial-00001", Percent: 100})
		cluster.WaitPassing(t, "serial-00001", 1)
	})
}

func TestConcurrencyOneSerializes(t *testing.T) {
	serialRevision(t)
	g := startGateway(t, nil)
	waitReady(t, g, "serial-00001", 1)
	c := client(g, 8)
	const n = 3 // in flight + burst capacity 2: none overflows
	start := time.Now()
	as := parallel(n, n, func(int) answer { return get(c, host("serial"), "/?sleep=300ms") })
	took := time.Since(start)
	for i, a := range as {
		if a.err != nil || a.status != 200 {
			t.Fatalf("request %d: %d %v %q", i, a.status, a.err, a.body)
		}
		if f := a.header.Get("X-Inflight"); f != "1" {
			t.Fatalf("request %d saw %s requests in flight on the instance, want 1", i, f)
		}
	}
	if took < n*300*time.Millisecond {
		t.Fatalf("%d requests of 300ms took %s: not serialized", n, took)
	}
	t.Logf("%d requests of 300ms with concurrency=1 took %s", n, took.Round(time.Millisecond))
}

func TestQueueOverflow503(t *testing.T) {
	serialRevision(t)
	g := startGateway(t, nil)
	waitReady(t, g, "serial-00001", 1)
	c := client(g, 8)
	// 1 in flight + 2 queued fit; 3 more overflow at once.
	var mu sync.Mutex
	codes := map[int]int{}
	var overflowTook []time.Duration
	as := parallel(6, 6, func(int) answer {
		a := get(c, host("serial"), "/?sleep=600ms")
		mu.Lock()
		defer mu.Unlock()
		codes[a.status]++
		if a.status == 503 {
			overflowTook = append(overflowTook, a.took)
		}
		return a
	})
	if codes[200] != 3 || codes[503] != 3 {
		t.Fatalf("codes %v, want 3×200 and 3×503", codes)
	}
	for _, a := range as {
		if a.status == 503 && (a.header.Get("Retry-After") == "" || !strings.Contains(a.body, "at capacity")) {
			t.Fatalf("overflow answer: %v %q", a.header, a.body)
		}
	}
	for _, d := range overflowTook {
		if d > 300*time.Millisecond {
			t.Fatalf("overflow took %s: it must be refused at once, not queued", d)
		}
	}
	if g := gaugeOf(t, g, "serial-00001"); g.InFlight != 0 || g.Queued != 0 {
		t.Fatalf("gauges after: %+v", g)
	}
}

func TestTimeout504(t *testing.T) {
	serialRevision(t) // timeout 3s
	g := startGateway(t, nil)
	waitReady(t, g, "serial-00001", 1)
	c := client(g, 2)
	a := get(c, host("serial"), "/?sleep=10s")
	if a.status != 504 || !strings.Contains(a.body, "did not answer within its timeout of 3s") {
		t.Fatalf("slow upstream → %d %q", a.status, a.body)
	}
	if a.took < 2900*time.Millisecond || a.took > 4500*time.Millisecond {
		t.Fatalf("504 after %s, want ≈3s", a.took)
	}
	// The slot was released: the next request is served at once.
	if a := get(c, host("serial"), "/"); a.status != 200 || a.took > time.Second {
		t.Fatalf("after the timeout: %d in %s", a.status, a.took)
	}
}
