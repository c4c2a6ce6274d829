package faults

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/internal/harness/multinode"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

// scale is how hard and how long a fault run is.
type scale struct {
	rps   float64       // each stream's base rate
	warm  time.Duration // load before the fault
	hold  time.Duration // load after recovery
	pause time.Duration // how long a paused node stays paused
}

var (
	smoke = scale{rps: 30, warm: 4 * time.Second, hold: 4 * time.Second, pause: 10 * time.Second}
	long  = scale{rps: 100, warm: 15 * time.Second, hold: 15 * time.Second, pause: 30 * time.Second}
)

// The smoke subset `make test` runs: the faults whose wrong handling loses requests or
// moves counts. File order is run order: the node loss takes a worker for good.

func TestScalerLeaderKilled(t *testing.T) { scalerLeaderKilled(t, smoke) }
func TestGatewayKilled(t *testing.T)      { gatewayKilled(t, smoke) }
func TestNodeLost(t *testing.T)           { nodeLost(t, smoke) }

// BenchmarkChaos runs every fault at the long scale and prints the table (make
// bench-chaos). Each fault runs once whatever b.N is: these are figures, not timings.
func BenchmarkChaos(b *testing.B) {
	for _, f := range []struct {
		name string
		run  func(testing.TB, scale)
	}{
		{"ScalerLeaderKilled", scalerLeaderKilled},
		{"GatewayKilled", gatewayKilled},
		{"ConsulServerRestarted", consulRestarted},
		{"NomadLeaderKilled", nomadLeaderKilled},
		{"NodePaused", nodePaused},
		{"NodeLost", nodeLost},
	} {
		b.Run(f.name, func(b *testing.B) {
			f.run(b, long)
			b.ReportMetric(0, "ns/op")
		})
	}
}

// nodeLost: the worker running single's only instance (and one of steady's three) loses
// power under load. Only requests in flight on it may fail; the gateways route around it
// from the first refused connection, Nomad replaces its instances on the survivors, and
// single's requests are held until its replacement is up, then served.
func nodeLost(tb testing.TB, sc scale) {
	p := env
	steady, single := p.revision(tb, "steady"), p.revision(tb, "single")
	var victim *multinode.Node
	at, err := p.passing(single)
	fatalIf(tb, err)
	for _, n := range p.c.Workers {
		if at[n.Name] > 0 && n.State() == "up" {
			victim = n
		}
	}
	if victim == nil {
		tb.Fatalf("single's instance is on no live worker: %v", at)
	}
	l := p.run(stream{svc: "steady", rate: loadgen.Constant(sc.rps), sleepMS: 20},
		// single's rate holds more requests during the loss than the burst capacity (200)
		// queues: they must be held, not refused as a full queue.
		stream{svc: "single", rate: loadgen.Constant(2 * sc.rps), sleepMS: 20})
	defer l.finish()
	time.Sleep(sc.warm) // steady load before the fault
	lost := time.Now()
	p.c.Lose(victim)
	took := poll.Until(tb, 90*time.Second, "steady back to 3 and single to 1 passing instances, none on "+victim.Name, func() error {
		s, err := p.passing(steady)
		if err != nil {
			return err
		}
		g, err := p.passing(single)
		if err != nil {
			return err
		}
		if total(s) != 3 || s[victim.Name] > 0 || total(g) != 1 || g[victim.Name] > 0 {
			return fmt.Errorf("steady %v, single %v", s, g)
		}
		return nil
	})
	time.Sleep(sc.hold)
	l.finish()
	// Requests sent in the loss's second may have been in flight on the node; every one
	// sent from the next second on must be answered 2xx.
	o := l.outcome(l.second(lost) + 1)
	p.record(tb, "worker node lost (power cut)", o, took,
		fmt.Sprintf("%d failed of those sent before the loss; replacement in %v", o.Errors+o.Shed-o.failedAfter, took.Round(100*time.Millisecond)))
	if o.failedAfter != 0 {
		tb.Errorf("%d requests sent after the loss failed: %v", o.failedAfter, o.errors)
	}
	// In flight on the node at the loss: at most what it can hold (the two streams at
	// 20 ms each, a third of steady's and all of single's), with slack for a busy machine.
	if inflight := o.Errors + o.Shed - o.failedAfter; float64(inflight) > 1+sc.rps*0.2 {
		tb.Errorf("%d requests failed around the loss: more than could have been in flight on the node (%v)", inflight, o.errors)
	}
}

// scalerLeaderKilled: the leading scaler is SIGKILLed while elastic's load triples. The
// other leads within the session TTL, never scales anything down from a partial view
// (elastic's count never drops below what it was), scaling resumes (the count rises for
// the new load), and no request fails.
func scalerLeaderKilled(tb testing.TB, sc scale) {
	p := env
	rev, l, step, before := p.tripling(tb, sc)
	defer l.finish()
	stopCounts := p.watchCounts(rev)
	old := p.leader()
	if old == nil {
		tb.Fatal("no scaler leads")
	}
	killed := time.Now()
	step.Store(true)
	old.Kill()
	failover := poll.Until(tb, 30*time.Second, "another scaler leads", func() error {
		if l := p.leader(); l == nil || l == old {
			return fmt.Errorf("leader %v", l)
		}
		return nil
	})
	// Three times the load wants more instances: the new leader must add them.
	p.scaledAbove(tb, rev, before, "by the new leader")
	recovered := time.Since(killed)
	time.Sleep(sc.hold)
	lo, hi := stopCounts()
	l.finish()
	o := l.outcome(0)
	p.record(tb, "scaler leader SIGKILLed", o, recovered,
		fmt.Sprintf("failover %v; elastic count %d before, %d–%d after", failover.Round(100*time.Millisecond), before, lo, hi))
	noneFailed(tb, o)
	if lo < before {
		tb.Errorf("elastic's count fell to %d (from %d) across the failover", lo, before)
	}
	// The killed replica comes back as a standby: the next fault has two again.
	s, err := p.c.StartScaler(context.Background(), old.Node, old.ID+"b", multinode.DaemonOptions{})
	fatalIf(tb, err)
	p.scalers = append(p.scalers, s)
}

// gatewayKilled: one of the two gateways is SIGKILLed under steady load on elastic (a
// fixed number of requests in flight).
// Clients fall through to the other; the scaler's counts come from the survivor alone
// and are neither halved nor zeroed (the KEDA http-add-on#1730 class); the only failures
// are requests that were in flight on the killed gateway.
func gatewayKilled(tb testing.TB, sc scale) {
	p := env
	rev := p.revision(tb, "elastic")
	// A closed loop: its concurrency, and so the count it wants, is the same however slow
	// the machine is, and a count that falls is the scaler's doing.
	l := p.closed("elastic", int(sc.rps/5), 100)
	defer l.finish()
	time.Sleep(sc.warm)
	// The count the load wants, settled: the same for 2 s.
	var before int
	poll.Until(tb, 60*time.Second, "elastic's count settled under the load", func() error {
		c1, err := p.count(rev)
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		c2, err := p.count(rev)
		if err != nil || c1 != c2 || c1 < 2 {
			return fmt.Errorf("count %d then %d: %v", c1, c2, err)
		}
		before = c2
		return nil
	})
	stopCounts := p.watchCounts(rev)
	var victim *multinode.Daemon
	for _, g := range p.gateways {
		if ok, _ := g.Exited(); !ok {
			victim = g
			break
		}
	}
	killed := time.Now()
	victim.Kill()
	// The scaler drops the dead gateway once Consul says so; until then its ticks are
	// partial and change nothing.
	took := poll.Until(tb, 60*time.Second, "Consul drops the killed gateway", func() error {
		es, _, err := p.c.Consul.Health().Service("rouse-gateway", "", true, nil)
		if err != nil {
			return err
		}
		for _, e := range es {
			if e.Service.ID == victim.ID {
				return fmt.Errorf("%s still passing", victim.ID)
			}
		}
		if len(es) == 0 {
			return fmt.Errorf("no gateway passing")
		}
		return nil
	})
	time.Sleep(sc.hold + 6*time.Second) // a whole stable window on the survivor's gauges alone
	lo, hi := stopCounts()
	l.finish()
	o := l.outcome(l.second(killed) + 1)
	p.record(tb, "one of two gateways SIGKILLed", o, took,
		fmt.Sprintf("%d failed of those sent before the kill; elastic count %d before, %d–%d after", o.Errors+o.Shed-o.failedAfter, before, lo, hi))
	if o.failedAfter != 0 {
		tb.Errorf("%d requests sent after the kill failed: %v", o.failedAfter, o.errors)
	}
	if 2*lo <= before || lo < before-1 {
		tb.Errorf("elastic's count fell to %d from %d after a gateway died", lo, before)
	}
	// A new gateway replaces it, so the next fault has two.
	g, err := p.c.StartGateway(context.Background(), victim.Node, victim.ID+"b", multinode.DaemonOptions{})
	fatalIf(tb, err)
	p.gateways = append(p.gateways, g)
	poll.Until(tb, 30*time.Second, "the new gateway routes", func() error {
		b, err := g.Get("/routes")
		if err != nil {
			return err
		}
		if !strings.Contains(b, "elastic") {
			return fmt.Errorf("routes: %s", b)
		}
		return nil
	})
}

// consulRestarted: the Consul server stops and starts again under load. The gateways
// serve from the table they have; the scaler, without Consul, changes nothing; both carry
// on once it is back. No request fails.
func consulRestarted(tb testing.TB, sc scale) {
	p := env
	rev := p.revision(tb, "elastic")
	l := p.run(stream{svc: "steady", rate: loadgen.Constant(sc.rps), sleepMS: 20},
		stream{svc: "elastic", rate: loadgen.Constant(sc.rps), sleepMS: 100})
	defer l.finish()
	time.Sleep(sc.warm)
	before, err := p.count(rev)
	fatalIf(tb, err)
	stopCounts := p.watchCounts(rev)
	t0 := time.Now()
	away, err := p.c.RestartConsulServer(context.Background())
	fatalIf(tb, err)
	poll.Until(tb, 60*time.Second, "a scaler leads and both gateways pass again", func() error {
		es, _, err := p.c.Consul.Health().Service("rouse-gateway", "", true, nil)
		if err != nil {
			return err
		}
		if len(es) < 2 || p.leader() == nil {
			return fmt.Errorf("%d gateways passing, leader %v", len(es), p.leader())
		}
		return nil
	})
	recovered := time.Since(t0)
	time.Sleep(sc.hold)
	lo, hi := stopCounts()
	l.finish()
	o := l.outcome(0)
	p.record(tb, "Consul server restarted", o, recovered,
		fmt.Sprintf("server away %v; elastic count %d before, %d–%d", away.Round(100*time.Millisecond), before, lo, hi))
	noneFailed(tb, o)
	if lo < before-1 || lo == 0 {
		tb.Errorf("elastic's count fell to %d from %d", lo, before)
	}
}

// nomadLeaderKilled: the leading Nomad server of three is SIGKILLed under load. Serving
// goes on; once the others elect a leader the scaler scales again (the load doubles and
// the count follows). No request fails.
func nomadLeaderKilled(tb testing.TB, sc scale) {
	p := env
	rev, l, step, before := p.tripling(tb, sc)
	defer l.finish()
	killed := time.Now()
	old, err := p.c.KillNomadLeader()
	fatalIf(tb, err)
	fatalIf(tb, p.c.WaitNomadLeader(context.Background(), old.RPCAddr))
	elected := time.Since(killed)
	step.Store(true)
	p.scaledAbove(tb, rev, before, "after the election")
	recovered := time.Since(killed)
	time.Sleep(sc.hold)
	l.finish()
	o := l.outcome(0)
	p.record(tb, "Nomad leader SIGKILLed (3 servers)", o, recovered, fmt.Sprintf("new leader in %v", elected.Round(100*time.Millisecond)))
	noneFailed(tb, o)
	// Three servers again for the next fault: with two, one starved a moment on this
	// shared machine is a lost quorum.
	fatalIf(tb, p.c.RestartNomadServer(context.Background(), old))
}

// nodePaused: a worker with one of steady's instances is paused (SIGSTOP) for sc.pause
// and resumed, as a node cut off by a partition comes back. Requests already on its
// instance wait; new ones go elsewhere once Consul marks the node failed.
func nodePaused(tb testing.TB, sc scale) {
	p := env
	steady := p.revision(tb, "steady")
	at, err := p.passing(steady)
	fatalIf(tb, err)
	var victim *multinode.Node
	for _, n := range p.c.Workers {
		if at[n.Name] > 0 && n.State() == "up" {
			victim = n
		}
	}
	if victim == nil {
		tb.Fatalf("steady on no live worker: %v", at)
	}
	l := p.run(stream{svc: "steady", rate: loadgen.Constant(sc.rps), sleepMS: 20})
	defer l.finish()
	time.Sleep(sc.warm)
	paused := time.Now()
	p.c.Pause(victim)
	// While it is paused: when Consul stops listing its instance as passing, and when
	// Nomad marks the node down.
	var consulOut, nomadDown time.Duration
	for end := paused.Add(sc.pause); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if s, err := p.passing(steady); err == nil && s[victim.Name] == 0 && consulOut == 0 {
			consulOut = time.Since(paused)
		}
		if nd, _, err := p.c.Nomad.Nodes().Info(victim.Nomad.NodeID(), nil); err == nil && nd.Status == "down" && nomadDown == 0 {
			nomadDown = time.Since(paused)
		}
	}
	p.c.Resume(victim)
	took := poll.Until(tb, 120*time.Second, "steady back to 3 passing instances", func() error {
		s, err := p.passing(steady)
		if err != nil {
			return err
		}
		if total(s) != 3 {
			return fmt.Errorf("steady %v", s)
		}
		return nil
	})
	recovered := time.Since(paused)
	time.Sleep(sc.hold)
	l.finish()
	o := l.outcome(0)
	p.record(tb, fmt.Sprintf("worker paused %v", sc.pause), o, recovered,
		fmt.Sprintf("Consul dropped its instance after %s, Nomad marked it down after %s; 3 passing %v after resume",
			seen(consulOut), seen(nomadDown), took.Round(100*time.Millisecond)))
}

// noneFailed fails tb if any request of o failed or was shed.
func noneFailed(tb testing.TB, o outcome) {
	tb.Helper()
	if o.Errors+o.Shed != 0 {
		tb.Errorf("%d requests failed: %v", o.Errors+o.Shed, o.errors)
	}
}

// tripling starts elastic's load at sc.rps, ?sleep=100, and returns once it has run for
// sc.warm: the revision, the load, the switch that triples its rate, and the count then.
func (p *platform) tripling(tb testing.TB, sc scale) (rev string, l *load, step *atomic.Bool, before int) {
	tb.Helper()
	rev = p.revision(tb, "elastic")
	step = new(atomic.Bool)
	rate := func(time.Duration) float64 {
		if step.Load() {
			return 3 * sc.rps
		}
		return sc.rps
	}
	l = p.run(stream{svc: "elastic", rate: rate, sleepMS: 100})
	time.Sleep(sc.warm)
	before, err := p.count(rev)
	if err != nil {
		l.finish()
		tb.Fatal(err)
	}
	return rev, l, step, before
}

// scaledAbove waits until the revision's count is above before: the scaler acted on the
// tripled load (when: what the failure message says it waited for).
func (p *platform) scaledAbove(tb testing.TB, rev string, before int, when string) {
	tb.Helper()
	poll.Until(tb, 60*time.Second, "elastic scaled up "+when, func() error {
		if c, err := p.count(rev); err != nil || c <= before {
			return fmt.Errorf("count %d (before %d): %v", c, before, err)
		}
		return nil
	})
}

// seen is a duration observed, or "never".
func seen(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.Round(100 * time.Millisecond).String()
}
