package gateway_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/gateway/watch"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// Two registered gateways split a revision's per-instance limit: concurrency = 2 on one
// instance gives each gateway one slot, so each serializes its own requests while the
// instance never sees more than 2.
func TestGatewaysShareTheLimit(t *testing.T) {
	const rev = "duo-00001"
	deploy(t, revision{svc: "duo", name: rev, count: 1, cfg: func(c *revmeta.Config) {
		c.Concurrency = 2
		c.TargetBurstCapacity = 10
	}})
	setRoute(t, "duo", store.RouteTarget{Revision: rev, Percent: 100})
	cluster.WaitPassing(t, rev, 1)
	a := startGateway(t, func(c *gateway.Config) { c.Register, c.ID = true, "gw-a" })
	b := startGateway(t, func(c *gateway.Config) { c.Register, c.ID = true, "gw-b" })
	poll.Until(t, 30*time.Second, "both gateways passing in Consul", func() error {
		es, _, err := cluster.Consul.Health().Service(watch.GatewayService, "", true, nil)
		if err != nil || len(es) != 2 {
			return fmt.Errorf("passing gateways in consul: %d %v", len(es), err)
		}
		for _, e := range es {
			if e.Service.ID == "gw-a" && fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port) != a.AdminAddr() {
				return fmt.Errorf("gw-a registered at %s:%d, admin is %s", e.Service.Address, e.Service.Port, a.AdminAddr())
			}
		}
		return nil
	})
	for _, g := range []*gateway.Gateway{a, b} {
		waitReady(t, g, rev, 1)
		poll.Until(t, 10*time.Second, "each gateway taking its share of the limit", func() error {
			if r := adminGet(t, g, "/routes"); !strings.Contains(r, "limit=1 ") {
				return fmt.Errorf("%s has not taken its share:\n%s", g.ID(), r)
			}
			return nil
		})
	}
	start := time.Now()
	type res struct {
		as []answer
	}
	done := make(chan res, 2)
	for _, g := range []*gateway.Gateway{a, b} {
		go func() {
			c := client(g, 4)
			done <- res{parallel(3, 3, func(int) answer { return get(c, host("duo"), "/?sleep=300ms") })}
		}()
	}
	maxSeen := 0
	for i := 0; i < 2; i++ {
		for _, an := range (<-done).as {
			if an.status != 200 {
				t.Fatalf("%d %q %v", an.status, an.body, an.err)
			}
			var n int
			fmt.Sscan(an.header.Get("X-Inflight"), &n)
			maxSeen = max(maxSeen, n)
		}
	}
	took := time.Since(start)
	if maxSeen > 2 {
		t.Fatalf("the instance saw %d requests at once, limit 2", maxSeen)
	}
	if took < 900*time.Millisecond {
		t.Fatalf("3 requests per gateway of 300ms took %s: a gateway used more than its one slot", took)
	}
	t.Logf("2 gateways × 3 requests of 300ms on one instance with concurrency=2: %s, at most %d at once on the instance", took.Round(time.Millisecond), maxSeen)
}
