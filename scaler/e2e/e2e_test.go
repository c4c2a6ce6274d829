// Package e2e proves `rouse scaler` on real Nomad and Consul agents: revision jobs scale
// from zero to N under load and back after the grace, a failing gateway never scales
// anything down, and a killed leader is replaced within 15 s. The gauges come from a
// test server speaking the gateways' real wire format, registered in Consul as
// rouse-gateway.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/fakegateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/scaler"
)

var cluster *testcluster.Cluster

// childEnv marks the re-executed test binary that runs one scaler replica, so the
// failover test can kill a leader's process for real.
const childEnv = "ROUSE_E2E_SCALER_CHILD"

func TestMain(m *testing.M) {
	if id := os.Getenv(childEnv); id != "" {
		os.Exit(runChild(id))
	}
	os.Exit(testcluster.Run(m, testcluster.Options{}, &cluster))
}

func runChild(id string) int {
	nc, err := nomadapi.NewClient(nomadapi.DefaultConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cc, err := consulapi.NewClient(consulapi.DefaultConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log, _ := zap.NewDevelopment()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := scaler.Run(ctx, scaler.Config{Nomad: nc, Consul: cc, Logger: log, ID: id, Tick: time.Second}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// revisionJob is a revision as jobspec compiles it: group "app" without deployments,
// raw_exec hello on a dynamic port, a Consul service named after the revision.
func revisionJob(t *testing.T, cfg revmeta.Config, count int) *nomadapi.Job {
	t.Helper()
	bin, err := cluster.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	id := cfg.Revision
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"*"}
	job.Meta = cfg.Meta()
	job.Update = &nomadapi.UpdateStrategy{MaxParallel: &zero}
	tg := nomadapi.NewTaskGroup(revmeta.Group, count)
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: revmeta.PortLabel}}}}
	delay := 500 * time.Millisecond
	tg.ShutdownDelay = &delay
	tg.Services = []*nomadapi.Service{{
		Name: id, PortLabel: revmeta.PortLabel, Provider: "consul",
		Tags:   []string{revmeta.TagRouse, revmeta.TagServicePrefix + cfg.Service},
		Checks: []nomadapi.ServiceCheck{{Type: "http", Path: "/healthz", Interval: time.Second, Timeout: time.Second}},
	}}
	task := nomadapi.NewTask(revmeta.Task, "raw_exec")
	task.Config = map[string]any{"command": bin}
	task.Env = map[string]string{"PORT": "${NOMAD_PORT_http}", "ROUSE_REVISION": id}
	cpu, mem := 50, 32
	task.Resources = &nomadapi.Resources{CPU: &cpu, MemoryMB: &mem}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

func revConfig(name string) revmeta.Config {
	c := revmeta.Defaults("default", "e2e", name)
	c.Target = 10 // per instance; × 0.7 → 7 in flight each
	c.Window, c.ScaleToZeroGrace = 6*time.Second, 3*time.Second
	return c
}

func register(t *testing.T, cfg revmeta.Config, count int) {
	t.Helper()
	if _, _, err := cluster.Nomad.Jobs().Register(revisionJob(t, cfg, count), nil); err != nil {
		t.Fatalf("register %s: %v", cfg.Revision, err)
	}
}

// groupCount is what Nomad was told; running is what runs.
func groupCount(t *testing.T, job string) (count, running int) {
	t.Helper()
	st, _, err := cluster.Nomad.Jobs().ScaleStatus(job, nil)
	if err != nil {
		t.Fatalf("scale status %s: %v", job, err)
	}
	g := st.TaskGroups[revmeta.Group]
	return g.Desired, g.Running
}

// gateway is a fake gateway's admin listener (internal/harness/fakegateway), registered
// in Consul as rouse-gateway for the scalers to find.
type gateway struct{ *fakegateway.Gateway }

func startGateway(t *testing.T, id string) *gateway {
	g := &gateway{fakegateway.Start(t, id)}
	host, port, _ := net.SplitHostPort(g.Addr())
	p, _ := strconv.Atoi(port)
	err := cluster.Consul.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: id, Name: "rouse-gateway", Address: host, Port: p,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.deregister)
	return g
}

func (g *gateway) deregister() { cluster.Consul.Agent().ServiceDeregister(g.ID()) }

func (g *gateway) set(rev string, inFlight, held int64) { g.Set("default", rev, inFlight, held) }

func (g *gateway) activate(rev string, held int64) uint64 {
	return g.Activate(gauges.Activation{Namespace: "default", Revision: rev, Held: held})
}

// replica runs one in-process scaler until the test ends or stop is called.
type replica struct {
	s    *scaler.Scaler
	stop context.CancelFunc
	done chan struct{}
}

func startReplica(t *testing.T, id string, mods ...func(*scaler.Config)) *replica {
	t.Helper()
	cfg := scaler.Config{
		Nomad: cluster.Nomad, Consul: cluster.Consul, Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(id),
		ID: id, Tick: time.Second, AdminAddr: "127.0.0.1:0",
	}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := scaler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{s: s, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("replica %s: %v", id, err)
		}
	}()
	t.Cleanup(func() { r.stop(); <-r.done })
	return r
}

// waitGroup waits until rev's group count and running instances satisfy ok.
func waitGroup(t *testing.T, within time.Duration, what, rev string, ok func(count, running int) bool) time.Duration {
	t.Helper()
	return poll.Until(t, within, what, func() error {
		if c, run := groupCount(t, rev); !ok(c, run) {
			return fmt.Errorf("count %d, running %d", c, run)
		}
		return nil
	})
}

func leads(r *replica) func() error { return poll.True(r.s.IsLeader) }

// get reads one of a replica's admin pages.
func get(t *testing.T, r *replica, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + r.s.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestZeroToNAndBack: the activation signal wakes a revision at zero, gauges scale it to
// N, a gateway that stops answering blocks every scale-down but not scale-ups, and once
// it is gone from Consul the revision goes back to zero after the grace.
func TestZeroToNAndBack(t *testing.T) {
	const rev = "e2e-00001"
	register(t, revConfig(rev), 0)
	a := startGateway(t, "gw-a")
	r := startReplica(t, "s1")
	poll.Until(t, 20*time.Second, "s1 leads", leads(r))
	poll.Until(t, 10*time.Second, "s1's tick knowing "+rev+" and its long poll waiting at gw-a", func() error {
		if d := get(t, r, "/decisions"); !strings.Contains(d, rev) {
			return fmt.Errorf("/decisions:\n%s", d)
		}
		if a.Parked(0) == 0 {
			return errors.New("no /activations long poll waiting at gw-a")
		}
		return nil
	})

	// The activation path: one held request at zero.
	a.set(rev, 0, 1)
	start := time.Now()
	a.activate(rev, 1)
	took := waitGroup(t, 5*time.Second, "activation 0 → 1", rev, func(c, _ int) bool { return c >= 1 })
	t.Logf("activation signal → Nomad count 1 seen by a poller: %v", took)
	waitGroup(t, 30*time.Second, "1 instance running", rev, func(_, run int) bool { return run >= 1 })
	t.Logf("activation signal → instance running: %v", time.Since(start))
	m := get(t, r, "/metrics")
	if !strings.Contains(m, "rouse_scaler_activations_total 1") {
		t.Errorf("activation not counted:\n%s", grep(m, "activation"))
	}
	t.Logf("scaler's own activation latency:\n%s", grep(m, "rouse_scaler_activation_seconds"))

	// Load: 20 in flight at 7 per instance → 3.
	a.set(rev, 20, 0)
	waitGroup(t, 15*time.Second, "count 3", rev, func(c, _ int) bool { return c == 3 })
	waitGroup(t, 60*time.Second, "3 running", rev, func(_, run int) bool { return run == 3 })

	// A second gateway joins, then dies while Consul still lists it healthy.
	b := startGateway(t, "gw-b")
	b.set(rev, 0, 0)
	poll.Until(t, 10*time.Second, "the leader reading gw-b's gauges", poll.True(func() bool { return b.Reads() > 0 }))
	b.Close()
	a.set(rev, 0, 0) // all traffic gone… as far as the gateway that answers knows
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if c, _ := groupCount(t, rev); c < 3 {
			t.Fatalf("scaled down to %d while a gateway was not answering", c)
		}
	}
	// Scale-ups still follow the gateway that answers.
	a.set(rev, 40, 0) // → 6
	waitGroup(t, 15*time.Second, "count 6 with one gateway down", rev, func(c, _ int) bool { return c == 6 })

	// The dead gateway leaves Consul; idle → 0 after a window of complete data + grace.
	b.deregister()
	a.set(rev, 0, 0)
	idle := time.Now()
	waitGroup(t, 60*time.Second, "count 0", rev, func(c, _ int) bool { return c == 0 })
	t.Logf("idle → count 0 in %v (window 6 s + grace 3 s, after a partial window)", time.Since(idle))
	waitGroup(t, 30*time.Second, "0 running", rev, func(_, run int) bool { return run == 0 })

	// Nomad's scaling events say who and why.
	st, _, err := cluster.Nomad.Jobs().ScaleStatus(rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range st.TaskGroups[revmeta.Group].Events {
		if !strings.HasPrefix(e.Message, "rouse scaler:") || e.Meta["rouse.scaler"] != "s1" {
			t.Errorf("scaling event without who/why: %+v", e)
		}
		reasons = append(reasons, fmt.Sprint(e.Meta["rouse.reason"]))
	}
	t.Logf("scaling events (newest first): %v", reasons)
}

// TestActivationBeforeListing: a revision registered at count 0 and woken at once —
// `autoscaling { initial = 0 }`, where apply routes the new revision ~20 ms after
// registering it — is announced before the leader's job listing has it (the job watch
// lists at most once a tick). The activation itself must scale it, not a later tick.
func TestActivationBeforeListing(t *testing.T) {
	const rev, other = "e2e-00003", "e2e-00004"
	a := startGateway(t, "gw-n")
	r := startReplica(t, "s-new", func(c *scaler.Config) { c.Tick = scaler.DefaultTick })
	poll.Until(t, 20*time.Second, "s-new leads", leads(r))
	poll.Until(t, 10*time.Second, "s-new's long poll waiting at gw-n", poll.True(func() bool { return a.Parked(0) > 0 }))

	// A change just before puts the leader's job watch in its once-a-tick pause: it lists
	// other at once, and the registration below only up to a tick later, as when apply
	// registers a revision on a busy cluster.
	register(t, revConfig(other), 0)
	poll.Until(t, 10*time.Second, "Nomad listing "+other, func() error {
		if _, _, err := cluster.Nomad.Jobs().Info(other, nil); err != nil {
			return err
		}
		return nil
	})

	register(t, revConfig(rev), 0)
	start := time.Now()
	a.set(rev, 0, 1)
	seq := a.activate(rev, 1)
	waitGroup(t, 10*time.Second, "activation 0 → 1 of a revision not listed yet", rev, func(c, _ int) bool { return c >= 1 })

	ev := firstScaleUp(t, rev)
	took := time.Unix(0, int64(ev.Time)).Sub(start)
	t.Logf("activation of a revision registered just before → Nomad count %d in %v (reason %v, %q)", *ev.Count, took, ev.Meta["rouse.reason"], ev.Message)
	if took > 500*time.Millisecond {
		t.Errorf("activation → scale took %v, want ≤ 500ms: the activation waited for a tick", took)
	}
	if reason := fmt.Sprint(ev.Meta["rouse.reason"]); reason != "activate" {
		t.Errorf("scaled for reason %q, want activate", reason)
	}
	poll.Until(t, 5*time.Second, "the poller back for the next activation", poll.True(func() bool { return a.Parked(seq) > 0 }))

	// The ticks that follow, whose listing catches up, keep it up until it runs.
	waitGroup(t, 30*time.Second, "1 instance running", rev, func(c, run int) bool {
		if c < 1 {
			t.Fatalf("count back at %d before the instance ran", c)
		}
		return run >= 1
	})
	t.Logf("activation → instance running: %v", time.Since(start))
}

// TestNewGatewayIsHeardAtOnce: a gateway that joins after the leader started (a new or
// restarted one) is long-polled as soon as Consul lists it healthy, not at the next tick:
// its held requests wake their revision at once.
func TestNewGatewayIsHeardAtOnce(t *testing.T) {
	const rev = "e2e-00005"
	register(t, revConfig(rev), 0)
	r := startReplica(t, "s-gw", func(c *scaler.Config) { c.Tick = scaler.DefaultTick })
	poll.Until(t, 20*time.Second, "s-gw leads", leads(r))
	poll.Until(t, 10*time.Second, "s-gw's tick knowing "+rev, func() error {
		if d := get(t, r, "/decisions"); !strings.Contains(d, rev) {
			return fmt.Errorf("/decisions:\n%s", d)
		}
		return nil
	})
	// Just after a tick, so that the next one is most of a tick away.
	ticks := func() string { return grep(get(t, r, "/metrics"), "rouse_scaler_tick_duration_seconds_count") }
	before := ticks()
	poll.Until(t, 5*time.Second, "a tick", func() error {
		if n := ticks(); n == before {
			return fmt.Errorf("still %s", n)
		}
		return nil
	})

	g := startGateway(t, "gw-late")
	start := time.Now()
	g.set(rev, 0, 1)
	g.activate(rev, 1)
	waitGroup(t, 10*time.Second, "activation 0 → 1 at a gateway that just joined", rev, func(c, _ int) bool { return c >= 1 })
	took := time.Unix(0, int64(firstScaleUp(t, rev).Time)).Sub(start)
	t.Logf("gateway registered → its activation → Nomad count 1 in %v", took)
	if took > 500*time.Millisecond {
		t.Errorf("took %v, want ≤ 500ms: the new gateway was heard at a tick", took)
	}
}

// firstScaleUp is rev's first scaling event to a count ≥ 1: its Time says when the scale
// landed in Nomad, to the nanosecond.
func firstScaleUp(t *testing.T, rev string) *nomadapi.ScalingEvent {
	t.Helper()
	// Nomad records a scale's event after the count it sets (a CI run read the count at
	// 1 and no event yet), so the event is waited for; its own time is what is judged.
	var first *nomadapi.ScalingEvent
	poll.Until(t, 5*time.Second, "a scaling event of "+rev+" to ≥ 1", func() error {
		st, _, err := cluster.Nomad.Jobs().ScaleStatus(rev, nil)
		if err != nil {
			return err
		}
		evs := st.TaskGroups[revmeta.Group].Events
		for i, e := range evs {
			if e.Count != nil && *e.Count >= 1 && (first == nil || e.Time < first.Time) {
				first = &evs[i]
			}
		}
		if first == nil {
			return fmt.Errorf("events %+v", evs)
		}
		return nil
	})
	return first
}

// TestLeaderFailover: the leader's process is killed (SIGKILL, no cleanup); a standby
// leads within 15 s without moving any count. Then a leader that stops cleanly hands over
// at once.
func TestLeaderFailover(t *testing.T) {
	const rev = "e2e-00002"
	register(t, revConfig(rev), 2)
	a := startGateway(t, "gw-f")
	a.set(rev, 14, 0) // exactly 2 instances' worth

	logf, err := os.Create(t.TempDir() + "/child.log")
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(append(os.Environ(), cluster.Env()...), childEnv+"=crash-me")
	child.Stdout, child.Stderr = logf, logf
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("child log:\n%s", b)
		}
	}()
	holder := func() string {
		p, _, err := cluster.Consul.KV().Get(scaler.DefaultLeaderKey, nil)
		if err != nil || p == nil || p.Session == "" {
			return ""
		}
		return string(p.Value)
	}
	poll.Until(t, 30*time.Second, "the child leads", func() error {
		if h := holder(); h != "crash-me" {
			return fmt.Errorf("lock held by %q", h)
		}
		return nil
	})
	standby := startReplica(t, "standby")
	time.Sleep(3 * time.Second) // the child ticks a few times; the standby campaigns
	if standby.s.IsLeader() {
		t.Fatal("two leaders")
	}

	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	took := poll.Until(t, 15*time.Second, "the standby leads after SIGKILL", leads(standby))
	t.Logf("leader SIGKILLed → standby leads in %v", took)
	// The new leader starts from Nomad's count: no flap while its windows fill.
	for end := killed.Add(took + 8*time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if c, _ := groupCount(t, rev); c != 2 {
			t.Fatalf("count moved to %d across the takeover", c)
		}
	}

	// Clean handover: cancel the leader's context; the next standby leads at once.
	next := startReplica(t, "next")
	time.Sleep(time.Second)
	stopped := time.Now()
	standby.stop()
	poll.Until(t, 15*time.Second, "the next replica leads after a clean stop", leads(next))
	t.Logf("leader stopped cleanly → next leads in %v", time.Since(stopped))
	<-standby.done
	if h := holder(); h != "next" {
		t.Fatalf("lock holder %q", h)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
