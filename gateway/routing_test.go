package gateway_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/store"
)

func TestRouteByHostAndTag(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared",
		store.RouteTarget{Revision: "shared-00002", Percent: 100, Tag: "latest"},
		store.RouteTarget{Revision: "shared-00001", Percent: 0, Tag: "old"})
	g := startGateway(t, nil)
	waitReady(t, g, "shared-00001", 1)
	waitReady(t, g, "shared-00002", 1)
	c := client(g, 4)

	for h, want := range map[string]string{
		"shared.default.localhost":            "shared-00002",
		"SHARED.Default.localhost:8080":       "shared-00002",
		"latest-shared.default.localhost":     "shared-00002",
		"old-shared.default.localhost":        "shared-00001",
		"old-shared.default.localhost.:12345": "shared-00001",
	} {
		for i := 0; i < 5; i++ {
			a := get(c, h, "/")
			if a.err != nil || a.status != 200 || a.header.Get("X-Revision") != want {
				t.Fatalf("%s → %d %q (%v), want 200 from %s", h, a.status, a.header.Get("X-Revision"), a.err, want)
			}
		}
	}
	a := get(c, "nope.default.localhost", "/")
	if a.status != 404 || !strings.Contains(a.body, `no service for host "nope.default.localhost"`) || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("unknown host → %d %q", a.status, a.body)
	}
	if a := get(c, "shared.other.localhost", "/"); a.status != 404 {
		t.Fatalf("other namespace → %d", a.status)
	}
	t.Logf("route table:\n%s", g.Table())
}

// A 90/10 split over 2 000 requests lands within ±3 points, and a route change takes
// effect without restarting anything.
func TestSplit9010(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared",
		store.RouteTarget{Revision: "shared-00002", Percent: 90},
		store.RouteTarget{Revision: "shared-00001", Percent: 10})
	g := startGateway(t, nil)
	waitReady(t, g, "shared-00001", 1)
	waitReady(t, g, "shared-00002", 1)
	c := client(g, 8)
	const n = 2000
	start := time.Now()
	as := parallel(n, 8, func(int) answer { return get(c, host("shared"), "/") })
	counts := map[string]int{}
	for _, a := range as {
		if a.err != nil || a.status != 200 {
			t.Fatalf("request failed: %d %v", a.status, a.err)
		}
		counts[a.header.Get("X-Revision")]++
	}
	pct := float64(counts["shared-00001"]) * 100 / n
	t.Logf("%d requests in %s: %v (%.1f%% to the 10%% target)", n, time.Since(start).Round(time.Millisecond), counts, pct)
	if pct < 7 || pct > 13 || counts["shared-00001"]+counts["shared-00002"] != n {
		t.Fatalf("split %v: 10%% target got %.1f%%, want 10±3", counts, pct)
	}

	// Flip the split: the gateway follows KV at once.
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	poll.Until(t, 10*time.Second, "the flipped split served", func() error {
		if a := get(c, host("shared"), "/"); a.header.Get("X-Revision") != "shared-00001" {
			return errorf("still %q", a.header.Get("X-Revision"))
		}
		return nil
	})
	for i := 0; i < 50; i++ {
		if a := get(c, host("shared"), "/"); a.header.Get("X-Revision") != "shared-00001" {
			t.Fatalf("after the flip a request reached %q", a.header.Get("X-Revision"))
		}
	}
}
