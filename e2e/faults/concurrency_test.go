package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/multinode"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/store"
)

// A hard concurrency limit holds exactly however many gateways run (issue 24): the
// instance's own count of requests in flight (gateway/internal/testbackend, whose
// ?hold=1 requests run to their end even when their client goes) never passes the limit.

// exactSpec is a testbackend service with a hard limit and a fixed instance count.
func exactSpec(name string, limit, instances int) string {
	return fmt.Sprintf(`service %q {
  command     = "${var.bin}/testbackend"
  concurrency = %d
  resources {
    cpu    = 20
    memory = 32
  }
  readiness { path = "/healthz" }
  autoscaling {
    min = %d
    max = %d
  }
}
`, name, limit, instances, instances)
}

// via is a client whose every connection goes to the gateway at addr.
func via(addr string) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}}
}

// answer is one request's result.
type answer struct {
	code     int
	inflight int // the instance's X-Inflight: its requests in flight when this one began
	body     string
	err      error
}

func get(cl *http.Client, url string) answer {
	resp, err := cl.Get(url)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	n, _ := strconv.Atoi(resp.Header.Get("X-Inflight"))
	return answer{code: resp.StatusCode, inflight: n, body: string(b), err: err}
}

// appStats are one instance's own counts (testbackend's /stats).
type appStats struct{ max, served int }

// appStats asks every running instance of rev directly (its app port, not the guard's)
// for the most requests it ever had at once and how many it began.
func (p *platform) appStats(tb testing.TB, rev string) map[string]appStats {
	tb.Helper()
	stubs, _, err := p.c.Nomad.Jobs().Allocations(rev, false, nil)
	fatalIf(tb, err)
	out := map[string]appStats{}
	for _, s := range stubs {
		if s.ClientStatus != "running" {
			continue
		}
		a, _, err := p.c.Nomad.Allocations().Info(s.ID, nil)
		fatalIf(tb, err)
		for _, pm := range a.AllocatedResources.Shared.Ports {
			if pm.Label != "http" {
				continue
			}
			addr := net.JoinHostPort(pm.HostIP, strconv.Itoa(pm.Value))
			resp, err := http.Get("http://" + addr + "/stats")
			fatalIf(tb, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var st appStats
			var now int
			if _, err := fmt.Sscanf(string(b), "served=%d inflight=%d max=%d", &st.served, &now, &st.max); err != nil {
				tb.Fatalf("%s/stats: %q: %v", addr, b, err)
			}
			out[addr] = st
		}
	}
	return out
}

// gaugeTotal sums what every gateway in gws reports for rev: in flight, queued, held.
func gaugeTotal(gws []*multinode.Daemon, rev string) (int64, error) {
	var total int64
	for _, g := range gws {
		b, err := g.Get("/gauges")
		if err != nil {
			return 0, err
		}
		r, err := gauges.Read(strings.NewReader(b))
		if err != nil {
			return 0, err
		}
		for _, v := range r.Revisions {
			if v.Revision == rev {
				total += v.Concurrency()
			}
		}
	}
	return total, nil
}

// burst sends n requests at once, spread in turn over gws, and returns their answers
// and how long the last took; midway it checks that the gateways' gauges add up to every
// request sent (the scaler's view is the true total, wherever a request waits).
func burst(tb testing.TB, gws []*multinode.Daemon, rev, url string, n int) ([]answer, time.Duration) {
	tb.Helper()
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		cl := via(gws[i%len(gws)].PublicAddr)
		wg.Go(func() { answers[i] = get(cl, url) })
	}
	poll.Until(tb, 5*time.Second, "the gateways' gauges to count every request", func() error {
		t, err := gaugeTotal(gws, rev)
		if err == nil && t != int64(n) {
			err = fmt.Errorf("gauges add up to %d, %d requests are out", t, n)
		}
		return err
	})
	wg.Wait()
	return answers, time.Since(start)
}

func TestConcurrencyExactAcrossGateways(t *testing.T) {
	p := env
	fatalIf(t, p.applySpec("exact1", exactSpec("exact1", 1, 1)))
	rev := p.revision(t, "exact1")
	url := "http://exact1.default.localhost/?sleep=1s&hold=1"

	// concurrency = 1, one instance: ten 1 s requests at once take 10 s, one at a time,
	// with two gateways and then with three.
	third, err := p.c.StartGateway(context.Background(), p.c.Edges[0], "gw-exact", multinode.DaemonOptions{})
	fatalIf(t, err)
	defer third.Stop(10 * time.Second)
	two := []*multinode.Daemon{p.gateways[0], p.gateways[1]}
	three := append(append([]*multinode.Daemon{}, two...), third)
	waitRoutes(t, three, "exact1")
	for _, gws := range [][]*multinode.Daemon{two, three} {
		answers, took := burst(t, gws, rev, url, 10)
		for i, a := range answers {
			if a.err != nil || a.code != 200 {
				t.Fatalf("%d gateways, request %d: %d %v", len(gws), i, a.code, a.err)
			}
			if a.inflight != 1 {
				t.Errorf("%d gateways: the instance had %d requests in flight at once", len(gws), a.inflight)
			}
		}
		if took < 10*time.Second {
			t.Errorf("%d gateways: ten 1 s requests took %s on one instance of concurrency 1", len(gws), took)
		}
		t.Logf("%d gateways: ten 1 s requests took %s", len(gws), took.Round(10*time.Millisecond))
	}
	if m := p.appStats(t, rev); len(m) != 1 || maxOf(m) != 1 {
		t.Errorf("the instance's own maximum in flight: %v, want 1", m)
	}
	p.deleteAll(t, []string{"exact1"})

	// concurrency = 2, two instances, three gateways under a closed loop of 12 clients;
	// one gateway is SIGKILLed with requests in flight (they run on, to their end) and
	// another added.
	fatalIf(t, p.applySpec("exact2", exactSpec("exact2", 2, 2)))
	rev = p.revision(t, "exact2")
	waitRoutes(t, three, "exact2")
	url = "http://exact2.default.localhost/?sleep=300ms&hold=1"
	var live atomic.Pointer[[]*multinode.Daemon]
	live.Store(&three)
	var ok, failed, over atomic.Int64
	var maxSeen atomic.Int64
	victim := third
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				gws := *live.Load()
				g := gws[(i+k)%len(gws)]
				a := get(via(g.PublicAddr), url)
				switch {
				case a.err != nil || a.code != 200:
					failed.Add(1)
					if g != victim {
						t.Errorf("through %s, which was not killed: %d %v", g.ID, a.code, a.err)
					}
				default:
					ok.Add(1)
				}
				for m := maxSeen.Load(); int64(a.inflight) > m && !maxSeen.CompareAndSwap(m, int64(a.inflight)); m = maxSeen.Load() {
				}
				if a.inflight > 2 {
					over.Add(1)
				}
			}
		})
	}
	time.Sleep(4 * time.Second)
	beforeKill := ok.Load()
	survivors := []*multinode.Daemon{p.gateways[0], p.gateways[1]}
	live.Store(&survivors)
	victim.Kill()
	time.Sleep(2 * time.Second)
	added, err := p.c.StartGateway(context.Background(), p.c.Edges[1], "gw-exact-added", multinode.DaemonOptions{})
	fatalIf(t, err)
	defer added.Stop(10 * time.Second)
	waitRoutes(t, []*multinode.Daemon{added}, "exact2")
	withAdded := append(append([]*multinode.Daemon{}, survivors...), added)
	live.Store(&withAdded)
	atAdd := ok.Load()
	time.Sleep(6 * time.Second)
	close(stop)
	wg.Wait()
	m := p.appStats(t, rev)
	t.Logf("concurrency 2, 2 instances, 3 gateways (one killed, one added): %d answered 200, %d failed, all in flight through the killed gateway; instances' own maxima %v",
		ok.Load(), failed.Load(), m)
	if len(m) != 2 {
		t.Fatalf("instances: %v, want 2", m)
	}
	for addr, st := range m {
		if st.max != 2 {
			t.Errorf("instance %s had at most %d requests in flight; the limit 2 must hold and be used", addr, st.max)
		}
	}
	if over.Load() > 0 || maxSeen.Load() > 2 {
		t.Errorf("%d answers saw more than 2 in flight (max %d)", over.Load(), maxSeen.Load())
	}
	// Only requests in flight through the killed gateway may fail (the loop above names
	// any other), and no more than one per client: none is sent to it after the kill.
	if f := failed.Load(); f > 12 {
		t.Errorf("%d requests failed through the killed gateway; at most the 12 in flight may", f)
	}
	// The load ran through each phase: 4 s before the kill, from the kill until the added
	// gateway routes, 6 s after. Even one instance's 2 slots of 300 ms answer 6 a second.
	// (No floor on the total: how the gateways' shares fall on the instances, and a dead
	// gateway's share until Consul drops it, leave one instance busier than the other.)
	for _, ph := range []struct {
		name string
		n    int64
	}{{"before the kill", beforeKill}, {"from the kill to the added gateway", atAdd - beforeKill}, {"after the gateway was added", ok.Load() - atAdd}} {
		if ph.n < 10 {
			t.Errorf("%d requests answered %s", ph.n, ph.name)
		}
	}
	p.deleteAll(t, []string{"exact2"})
}

func maxOf(m map[string]appStats) int {
	n := 0
	for _, v := range m {
		n = max(n, v.max)
	}
	return n
}

// waitRoutes waits until every gateway in gws routes svc.
func waitRoutes(tb testing.TB, gws []*multinode.Daemon, svc string) {
	tb.Helper()
	poll.Until(tb, 30*time.Second, "the gateways route "+svc, func() error {
		for _, g := range gws {
			b, err := g.Get("/routes")
			if err != nil {
				return err
			}
			if !strings.Contains(b, svc) {
				return fmt.Errorf("%s does not route %s yet", g.ID, svc)
			}
		}
		return nil
	})
}

// From zero, with two gateways: six 1 s requests at once to a revision at zero with
// concurrency 1 and a 4 s timeout wake it, then run one at a time; those the timeout
// overtakes get the gateway's 504, and the ones still waiting in the guard then never
// reach the app (at most the one running at the timeout runs on, to its end).
func TestConcurrencyExactFromZeroWithTimeout(t *testing.T) {
	p := env
	fatalIf(t, p.applySpec("exact0", `service "exact0" {
  command     = "${var.bin}/testbackend"
  concurrency = 1
  timeout     = "4s"
  resources {
    cpu    = 20
    memory = 32
  }
  readiness { path = "/healthz" }
  autoscaling {
    initial = 0
    min     = 0
    max     = 1
  }
}
`))
	defer p.deleteAll(t, []string{"exact0"})
	s, err := store.New(p.c.Consul).GetService(context.Background(), "default", "exact0")
	fatalIf(t, err)
	rev := s.Route[0].Revision
	gws := []*multinode.Daemon{p.gateways[0], p.gateways[1]}
	waitRoutes(t, gws, "exact0")
	const n = 6
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		cl := via(gws[i%len(gws)].PublicAddr)
		wg.Go(func() { answers[i] = get(cl, "http://exact0.default.localhost/?sleep=1s&hold=1") })
	}
	wg.Wait()
	took := time.Since(start)
	ok, timedOut := 0, 0
	for i, a := range answers {
		switch {
		case a.err == nil && a.code == 200:
			ok++
			if a.inflight != 1 {
				t.Errorf("request %d: the instance had %d at once", i, a.inflight)
			}
		case a.err == nil && a.code == 504 && strings.Contains(a.body, "within its timeout of 4s"):
			timedOut++
		default:
			t.Errorf("request %d: %d %v %q", i, a.code, a.err, a.body)
		}
	}
	// Six seconds of work in a 4 s timeout, one at a time: some are served, some are not.
	if ok == 0 || timedOut == 0 || ok+timedOut != n {
		t.Fatalf("%d served, %d timed out of %d", ok, timedOut, n)
	}
	// The app ran those served and at most the one running when the timeout came.
	poll.Until(t, 10*time.Second, "the instance's counts", func() error {
		m := p.appStats(t, rev)
		if len(m) != 1 {
			return fmt.Errorf("instances %v", m)
		}
		for _, st := range m {
			if st.max != 1 || st.served < ok || st.served > ok+1 {
				return fmt.Errorf("the instance had at most %d at once and began %d requests; %d were served", st.max, st.served, ok)
			}
		}
		return nil
	})
	t.Logf("from zero: %d served, %d got 504 at the 4 s timeout, in %s", ok, timedOut, took.Round(10*time.Millisecond))
}
