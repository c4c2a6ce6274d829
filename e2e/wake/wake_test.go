package wake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/jobspec"
	"github.com/rouse-run/rouse/scaler"
)

// BenchmarkParallelWake is `make bench-wake`: for each N of ROUSE_WAKE_N (default
// 25,100) and ROUSE_WAKE_ROUNDS rounds (default 3), N copies of examples/hello applied at
// zero, one request each at once, the figures printed, the services deleted. It runs
// once whatever b.N is (figures, not a timing), and never under `go test` without -bench:
// it takes minutes and the machine to itself.
func BenchmarkParallelWake(tb *testing.B) {
	var t testing.TB = tb
	ns, err := intList(os.Getenv("ROUSE_WAKE_N"), []int{25, 100})
	if err != nil {
		t.Fatal(err)
	}
	rounds, err := intList(os.Getenv("ROUSE_WAKE_ROUNDS"), []int{3})
	if err != nil || len(rounds) != 1 || rounds[0] < 1 {
		t.Fatalf("ROUSE_WAKE_ROUNDS: want one number ≥ 1 (%v)", err)
	}
	b := startBench(t)
	fmt.Printf("bench-wake: %s, %d CPUs, load average at start %s\n", time.Now().Format(time.RFC3339), cpus(), loadavg())
	results := map[int][]Summary{}
	for _, n := range ns {
		for r := 1; r <= rounds[0]; r++ {
			s := b.round(t, n, r)
			results[n] = append(results[n], s)
		}
	}
	fmt.Printf("\n### Medians over %d rounds\n\n| N at once | all 200 | p50 | p95 | max |\n|---:|---:|---:|---:|---:|\n", rounds[0])
	for _, n := range ns {
		p50, p95, mx := Medians(results[n])
		ok := 0
		for _, s := range results[n] {
			ok += s.OK
		}
		fmt.Printf("| %d | %d/%d | %s | %s | %s |\n", n, ok, n*len(results[n]), ms(p50), ms(p95), ms(mx))
	}
	tb.ReportMetric(0, "ns/op")
}

// bench is the platform: the cluster, a gateway and a scaler in this process with their
// logs observed (the "activating", "scaled" and probe lines are stages), and a Consul
// watch that notes when each service is first registered and first passing.
type bench struct {
	c    *testcluster.Cluster
	gw   *gateway.Gateway
	ctl  *control.Client
	logs *observer.ObservedLogs
	bin  string // folder holding the hello binary
	spec []byte // examples/hello/service.hcl
	seen *consulSeen
	now  func() time.Time
}

func startBench(t testing.TB) *bench {
	c, err := testcluster.Start(testcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop) // purges every job, then stops the agents
	b := &bench{c: c, now: time.Now}
	root, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if b.spec, err = os.ReadFile(filepath.Join(root, "examples", "hello", "service.hcl")); err != nil {
		t.Fatal(err)
	}
	hello, err := c.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	b.bin = filepath.Join(c.Dir, "apps")
	if err := os.MkdirAll(b.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(hello, filepath.Join(b.bin, "hello")); err != nil {
		t.Fatal(err)
	}
	// Not devd.FileLogger: production sampling would drop most of 100 "activating" lines
	// in one second, and they are the measurements.
	logPath := filepath.Join(c.Dir, "rouse.log")
	cfg := zap.NewProductionConfig()
	cfg.Sampling, cfg.OutputPaths, cfg.ErrorOutputPaths = nil, []string{logPath}, []string{logPath}
	file, err := cfg.Build()
	if err != nil {
		t.Fatal(err)
	}
	obs, logs := observer.New(zapcore.InfoLevel)
	logger := zap.New(zapcore.NewTee(file.Core(), obs))
	b.logs = logs

	b.gw, err = gateway.New(gateway.Config{PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Domain: "localhost",
		Consul: c.Consul, Logger: logger.Named("gateway"), Register: true, ID: "bench-wake"})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := scaler.New(scaler.Config{Nomad: c.Nomad, Consul: c.Consul, Logger: logger.Named("scaler"),
		AdminAddr: "127.0.0.1:0", ID: "bench-wake"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{b.gw.Run, sc.Run} {
		wg.Go(func() { _ = run(ctx) })
	}
	b.seen = &consulSeen{first: map[string]time.Time{}, passing: map[string]time.Time{}, now: b.now}
	wg.Go(func() { b.seen.watch(ctx, c.Consul, false) })
	wg.Go(func() { b.seen.watch(ctx, c.Consul, true) })
	t.Cleanup(func() { cancel(); wg.Wait(); _ = logger.Sync() }) // before c.Stop (LIFO)
	b.ctl = control.New(control.Config{Nomad: c.Nomad, Consul: c.Consul, NomadAddr: c.NomadAddr,
		ConsulAddr: c.ConsulAddr, Domain: "localhost"})

	deadline := b.now().Add(30 * time.Second)
	for !sc.IsLeader() || b.gatewayIndex() == 0 {
		if b.now().After(deadline) {
			t.Fatalf("the scaler did not lead, or the gateway did not pass its check, within 30s (log %s)", logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return b
}

// round applies n services at zero, wakes them all at once, gathers and prints the
// stages, and deletes the services.
func (b *bench) round(t testing.TB, n, round int) Summary {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("wake%d-%d-%03d", n, round, i)
	}
	defer b.deleteAll(t, names)
	revs := make([]string, n)
	errs := parallel(8, n, func(i int) error {
		src := strings.Replace(string(b.spec), `service "hello"`, fmt.Sprintf("service %q", names[i]), 1)
		// examples/hello asks for 100 MHz: 100 of them do not fit on a 2-core node (~46 do,
		// the rest stay unplaced). The app idles at a few MHz.
		src = strings.Replace(src, "cpu    = 100", "cpu    = 20", 1)
		s, diags := jobspec.Parse(map[string][]byte{"service.hcl": []byte(src)}, map[string]string{"bin": b.bin})
		if diags.HasErrors() {
			return diags
		}
		s.Autoscaling.Initial = 0 // routed at zero: the first request wakes it
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := b.ctl.Apply(ctx, control.ApplyOptions{Spec: s, Source: src, Keep: control.DefaultKeep})
		if err != nil {
			return err
		}
		if !res.AtZero {
			return fmt.Errorf("%s: not applied at zero", names[i])
		}
		revs[i] = res.Revision
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("apply: %v", err)
	}
	b.waitRoutes(t)
	time.Sleep(3 * time.Second) // let the applies' evaluations and Consul writes settle
	b.logs.TakeAll()            // only this round's lines from here

	client := loadgen.Client(b.gw.PublicAddr(), n, 90*time.Second)
	defer client.CloseIdleConnections()
	load := loadavg()
	cpu0, procs0 := busyTicks(), b.procCPU()
	ws := make([]Wake, n)
	gun := make(chan struct{})
	var wg sync.WaitGroup
	for i := range ws {
		ws[i].Revision = revs[i]
		wg.Go(func() {
			<-gun
			w := &ws[i]
			req, _ := http.NewRequest(http.MethodGet, "http://"+names[i]+".default.localhost/", nil)
			w.Sent = b.now()
			resp, err := client.Do(req)
			if err != nil {
				w.Err = err.Error()
				return
			}
			_, _ = resp.Body.Read(make([]byte, 512))
			resp.Body.Close()
			w.Code, w.At[Answered] = resp.StatusCode, b.now()
		})
	}
	if dir := os.Getenv("ROUSE_WAKE_PPROF"); dir != "" {
		// The Nomad dev agent serves /debug/pprof: where its CPU goes during the wake.
		wg.Go(func() { b.nomadProfile(t, filepath.Join(dir, fmt.Sprintf("nomad-%d-%d.pprof", n, round))) })
	}
	close(gun)
	wg.Wait()
	cpu1, procs1 := busyTicks(), b.procCPU()
	b.collect(t, ws)
	s := Summarize(ws)
	s.Print(os.Stdout, fmt.Sprintf("N = %d, round %d (load average before %s)", n, round, load))
	fmt.Printf("\nCPU while the requests were out: machine %.0f %% busy of %d CPUs; this cluster's processes (CPU-seconds): %s\n",
		cpu1.busyPct(cpu0), cpus(), procs1.minus(procs0))
	for _, w := range ws {
		if w.Code != http.StatusOK {
			fmt.Printf("  %s: %d %s\n", w.Revision, w.Code, w.Err)
		}
	}
	return s
}

// collect fills in each wake's stages from the logs, Nomad and the Consul watch.
func (b *bench) collect(t testing.TB, ws []Wake) {
	t.Helper()
	byRev := map[string]*Wake{}
	for i := range ws {
		byRev[ws[i].Revision] = &ws[i]
	}
	warnings := map[string]int{}
	for _, e := range b.logs.TakeAll() {
		m := e.ContextMap()
		if e.Level >= zapcore.WarnLevel {
			warnings[fmt.Sprintf("%s: %s (%.120s)", e.LoggerName, e.Message, str(m["error"]))]++
		}
		switch {
		case e.Message == "activating":
			if w := byRev[strings.TrimPrefix(str(m["revision"]), "default/")]; w != nil && w.At[Activated].IsZero() {
				w.At[Activated] = e.Time
			}
		case e.Message == "scaled" && m["from"] == int64(0):
			if w := byRev[str(m["job"])]; w != nil && w.At[Scaled].IsZero() {
				w.At[Scaled] = e.Time
			}
		case strings.HasPrefix(e.Message, "instance answered the gateway's readiness probe"):
			if w := byRev[strings.TrimPrefix(str(m["revision"]), "default/")]; w != nil && w.At[Probed].IsZero() {
				w.At[Probed] = e.Time
			}
		}
	}
	for w, n := range warnings {
		fmt.Printf("  logged %d×: %s\n", n, w)
	}
	reg, pass := b.seen.times()
	errs := parallel(8, len(ws), func(i int) error {
		w := &ws[i]
		w.At[Registered], w.At[Passing] = reg[w.Revision], pass[w.Revision]
		return b.nomadStages(w)
	})
	for _, err := range errs {
		if err != nil {
			t.Logf("nomad stages: %v", err)
		}
	}
}

// nomadStages reads the scaling evaluation, the allocation it placed and its task events.
func (b *bench) nomadStages(w *Wake) error {
	evals, _, err := b.c.Nomad.Jobs().Evaluations(w.Revision, nil)
	if err != nil {
		return err
	}
	var ev *nomadapi.Evaluation
	for _, e := range evals {
		if e.TriggeredBy == "job-scaling" && (ev == nil || e.CreateTime < ev.CreateTime) {
			ev = e
		}
	}
	if ev != nil {
		w.At[EvalCreated] = time.Unix(0, ev.CreateTime)
		if ev.Status == "complete" {
			w.At[EvalDone] = time.Unix(0, ev.ModifyTime)
		}
	}
	stubs, _, err := b.c.Nomad.Jobs().Allocations(w.Revision, true, nil)
	if err != nil {
		return err
	}
	var first *nomadapi.AllocationListStub
	for _, a := range stubs {
		if first == nil || a.CreateTime < first.CreateTime {
			first = a
		}
	}
	if first == nil {
		return fmt.Errorf("%s: no allocation", w.Revision)
	}
	w.At[Placed] = time.Unix(0, first.CreateTime)
	// The client sends task events in batches: the answer can come before them.
	deadline := b.now().Add(10 * time.Second)
	for {
		a, _, err := b.c.Nomad.Allocations().Info(first.ID, nil)
		if err != nil {
			return err
		}
		if ts := a.TaskStates["app"]; ts != nil {
			for _, e := range ts.Events {
				at := time.Unix(0, e.Time)
				switch e.Type {
				case nomadapi.TaskReceived:
					w.At[Received] = at
				case nomadapi.TaskSetup:
					w.At[TaskSetup] = at
				case nomadapi.TaskStarted:
					w.At[Started] = at
				}
			}
		}
		if !w.At[Started].IsZero() || b.now().After(deadline) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nomadProfile saves a 15 s CPU profile of the Nomad agent to path.
func (b *bench) nomadProfile(t testing.TB, path string) {
	resp, err := http.Get(b.c.NomadAddr + "/debug/pprof/profile?seconds=15")
	if err != nil {
		t.Logf("nomad profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Logf("nomad profile: %v", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Logf("nomad profile: %v", err)
	}
}

// deleteAll deletes the round's services and waits for their allocations to stop.
func (b *bench) deleteAll(t testing.TB, names []string) {
	errs := parallel(8, len(names), func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var gone *control.NotFoundError
		if _, err := b.ctl.Delete(ctx, "default", names[i], 60*time.Second, nil); err != nil && !errors.As(err, &gone) {
			return err
		}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		t.Errorf("delete: %v", err)
	}
}

// gatewayIndex is the route table index the gateway registered (0: not passing yet).
func (b *bench) gatewayIndex() uint64 {
	es, _, err := b.c.Consul.Health().Service(scaler.DefaultGatewayService, "", true, nil)
	if err != nil || len(es) == 0 {
		return 0
	}
	i, _ := strconv.ParseUint(es[0].Service.Meta[gauges.MetaRoutesIndex], 10, 64)
	return i
}

// waitRoutes waits until the gateway serves the routes Consul has now: Apply returns
// once the route is written, the gateway loads it moments later.
func (b *bench) waitRoutes(t testing.TB) {
	_, qm, err := b.c.Consul.KV().List("rouse/", nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := b.now().Add(30 * time.Second)
	for b.gatewayIndex() < qm.LastIndex {
		if b.now().After(deadline) {
			t.Fatalf("the gateway did not load routes index %d within 30s", qm.LastIndex)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// consulSeen notes when each service is first in Consul's catalog, and first passing.
type consulSeen struct {
	mu             sync.Mutex
	first, passing map[string]time.Time
	now            func() time.Time
}

func (c *consulSeen) watch(ctx context.Context, cl *consulapi.Client, passing bool) {
	var idx uint64
	for ctx.Err() == nil {
		q := (&consulapi.QueryOptions{WaitIndex: idx, WaitTime: 10 * time.Second}).WithContext(ctx)
		var names []string
		var qm *consulapi.QueryMeta
		var err error
		if passing {
			var hs consulapi.HealthChecks
			hs, qm, err = cl.Health().State(consulapi.HealthPassing, q)
			for _, h := range hs {
				names = append(names, h.ServiceName)
			}
		} else {
			var svcs map[string][]string
			svcs, qm, err = cl.Catalog().Services(q)
			for n := range svcs {
				names = append(names, n)
			}
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		now := c.now()
		c.mu.Lock()
		m := c.first
		if passing {
			m = c.passing
		}
		for _, n := range names {
			if _, ok := m[n]; !ok {
				m[n] = now
			}
		}
		c.mu.Unlock()
		idx = qm.LastIndex
	}
}

func (c *consulSeen) times() (first, passing map[string]time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	first, passing = map[string]time.Time{}, map[string]time.Time{}
	for k, v := range c.first {
		first[k] = v
	}
	for k, v := range c.passing {
		passing[k] = v
	}
	return first, passing
}

// parallel runs f(0..n-1) on k workers and returns each one's error.
func parallel(k, n int, f func(i int) error) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, k)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	return errs
}

func str(v any) string { s, _ := v.(string); return s }

func intList(s string, def []int) ([]int, error) {
	if s == "" {
		return def, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
