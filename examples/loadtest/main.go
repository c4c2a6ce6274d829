// loadtest is `make bench-load` and `make bench-knative`: Knative Serving's performance
// benchmarks (knative/serving test/performance/benchmarks) run on rouse. Each run brings
// up the whole platform on loopback (Consul and Nomad dev agents, the gateway and the
// scaler in this process), deploys examples/autoscale with the shape's settings, offers
// ?sleep=100 requests on the shape's open-model schedule, and records every second:
// offered and achieved rate, p50/p95 latency, errors, and the instances Nomad was asked
// for and runs. It stops everything it started.
//
//	go run ./examples/loadtest -out bench-results                  # bench-load: 300 → 600 → 900 rps from zero
//	go run ./examples/loadtest -shape knative -out bench-results   # dataplane-probe, load-test, rollout-probe and their gates
//
// -shape load-test writes load.csv, load.svg and summary.txt; each Knative shape writes
// <shape>.csv, <shape>.svg and <shape>.txt, and -shape knative adds gates.md.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/cmd/rouse/devd"
	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/devenv"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/jobspec"
	"github.com/rouse-run/rouse/scaler"
)

type options struct {
	out         string
	dir         string
	keep        bool
	shape       string
	step        time.Duration
	rates       []float64
	target      float64
	cooldown    time.Duration
	sleep       int
	maxInFlight int
	timeout     time.Duration
	knative     knativeOptions
}

func main() {
	o := options{knative: defaultKnative()}
	rates := "300,600,900"
	flag.StringVar(&o.out, "out", "bench-results", "folder for the CSV, SVG and summary of each run")
	flag.StringVar(&o.dir, "dir", "", "folder for agent state and logs (default: a temporary folder, removed at the end)")
	flag.BoolVar(&o.keep, "keep", false, "keep the state and logs folder")
	flag.StringVar(&o.shape, "shape", shapeLoadTest, "what to run: load-test (`make bench-load`: -rates in -step steps, from zero, files load.*), "+
		"dataplane-probe or rollout-probe (Knative's, files <shape>.*), or knative (Knative's three, one platform each, then the table of gates)")
	flag.DurationVar(&o.step, "step", 60*time.Second, "load-test: duration of each load step")
	flag.StringVar(&rates, "rates", rates, "load-test: requests per second of each step, comma-separated")
	flag.Float64Var(&o.target, "target", 0, "load-test: concurrency target per instance (0 = examples/autoscale's, 10; Knative's default is 100)")
	flag.DurationVar(&o.cooldown, "cooldown", 20*time.Second, "load-test: time recorded after the last step, with no load")
	flag.IntVar(&o.sleep, "sleep", 100, "?sleep= of each request, in ms")
	flag.IntVar(&o.maxInFlight, "max-inflight", 2000, "bound on requests in flight per path; arrivals beyond it are shed and counted")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout (Knative's probes: 30 s)")
	k := &o.knative
	flag.Float64Var(&k.Scale, "scale", k.Scale, "knative: multiplies dataplane-probe's and rollout-probe's 1 000 rps")
	flag.Float64Var(&k.LoadScale, "load-scale", k.LoadScale, "knative: multiplies load-test's 1 000 → 2 000 → 3 000 rps")
	flag.DurationVar(&k.Dataplane, "dataplane-duration", k.Dataplane, "dataplane-probe: the gateway path's duration")
	flag.DurationVar(&k.DirectD, "direct-duration", k.DirectD, "dataplane-probe: the direct-to-instance baseline's duration (before the gateway path)")
	flag.DurationVar(&k.LoadStep, "load-step", k.LoadStep, "knative load-test: duration of each of its three steps")
	flag.DurationVar(&k.Rollout, "rollout-duration", k.Rollout, "rollout-probe: duration")
	flag.DurationVar(&k.UpdateAt, "update-at", k.UpdateAt, "rollout-probe: when the changed spec is applied")
	flag.IntVar(&k.Instances, "instances", k.Instances, "dataplane-probe: min = max instances (Knative: 5)")
	flag.IntVar(&k.RolloutMin, "rollout-min", k.RolloutMin, "rollout-probe: min instances before the change (Knative: 50)")
	flag.IntVar(&k.RolloutMax, "rollout-max", k.RolloutMax, "rollout-probe: max instances (Knative: 100)")
	flag.Parse()
	for _, f := range strings.Split(rates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "loadtest: -rates: %q is not a positive number\n", f)
			os.Exit(2)
		}
		o.rates = append(o.rates, v)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runAll(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: %v\n", err)
		os.Exit(1)
	}
}

// runAll runs the shapes -shape names, each on a platform of its own, and writes each
// one's files; with more than one (knative) it prints and writes the table of gates.
func runAll(ctx context.Context, o options, out io.Writer) error {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if o.shape == shapeLoadTest {
		sh := benchLoadShape(o.step, o.rates, o.cooldown)
		if o.target > 0 {
			t := o.target
			sh.Tune = func(sp *jobspec.Spec) { sp.Autoscaling.Target = t }
		}
		rep, err := run(ctx, o, sh, out)
		if err != nil {
			return err
		}
		return writeReport(o.out, "load", "summary.txt", rep, out)
	}
	names := []string{o.shape}
	if o.shape == shapeKnative {
		names = knativeOrder()
	}
	var (
		gs     []gate
		failed []string
	)
	for _, name := range names {
		sh, err := knativeShape(name, o.knative)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\n=== %s: %s in all\n", name, sh.Duration())
		rep, err := run(ctx, o, sh, out)
		if err == nil {
			err = writeReport(o.out, name, name+".txt", rep, out)
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			// One benchmark failing to run must not lose the others' figures.
			fmt.Fprintf(out, "loadtest: %s: %v\n", name, err)
			failed = append(failed, name+": "+err.Error())
			gs = append(gs, gate{Shape: name, Name: "run", Target: "completes", Measured: err.Error()})
			continue
		}
		gs = append(gs, rep.Gates...)
	}
	table := fmt.Sprintf("Knative's SLA gates on rouse, %s, %d CPUs (load average %s at the end)\n\n%s",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), loadAvg(), gateTable(gs))
	fmt.Fprintf(out, "\n%s", table)
	if err := os.WriteFile(filepath.Join(o.out, "gates.md"), []byte(table), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s\n", filepath.Join(o.out, "gates.md"))
	if len(failed) > 0 {
		return fmt.Errorf("%d benchmark(s) did not run: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// run brings the platform up, deploys examples/autoscale with the shape's settings, runs
// the shape against it and tears everything down.
func run(ctx context.Context, o options, sh shape, out io.Writer) (rep *report, err error) {
	// Every run is bounded: its load, plus room for the agents to start, the app to build,
	// the instances to start or stop, and the platform to stop.
	ctx, cancel := context.WithTimeout(ctx, sh.Duration()+5*time.Minute)
	defer cancel()
	root, err := agents.ModuleRoot()
	if err != nil {
		return nil, err
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "rouse-loadtest-"); err != nil {
			return nil, err
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	} else if o.shape == shapeKnative {
		dir = filepath.Join(dir, sh.Name)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}

	// The app the platform runs, built for this run.
	binDir := filepath.Join(dir, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(binDir, "autoscale"), "./examples/autoscale")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./examples/autoscale: %v\n%s", err, b)
	}
	specPath := filepath.Join(root, "examples", "autoscale", "service.hcl")
	spec, files, diags := jobspec.ParseFiles([]string{specPath}, map[string]string{"bin": binDir})
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: %s", specPath, diags.Error())
	}
	src := ""
	for _, f := range files {
		src = string(f.Bytes)
	}
	if sh.Tune != nil {
		sh.Tune(spec)
		if err := spec.Autoscaling.Validate(); err != nil {
			return nil, fmt.Errorf("%s settings: %w", sh.Name, err)
		}
	}

	logPath := filepath.Join(dir, "rouse.log")
	logger, err := devd.FileLogger(logPath)
	if err != nil {
		return nil, err
	}
	defer logger.Sync()
	ports, err := agents.FreePorts(2)
	if err != nil {
		return nil, err
	}

	var (
		gw *gateway.Gateway
		sc *scaler.Scaler
	)
	// The access log is off: at 1 000 rps it would measure the disk as much as the gateway.
	gwd := devd.GatewayDaemon(gateway.Config{PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Domain: "localhost",
		Logger: logger.Named("gateway"), AccessLog: zap.NewNop(), Register: true, ID: "loadtest"},
		func(g *gateway.Gateway) { gw = g })
	scd := devd.ScalerDaemon(scaler.Config{Logger: logger.Named("scaler"), AdminAddr: "127.0.0.1:0", ID: "loadtest"},
		func(s *scaler.Scaler) { sc = s })
	var (
		revision, url string
		ctl           *control.Client
	)
	deploy := func(ctx context.Context, p devenv.Platform) ([]string, error) {
		ctl = control.New(control.Config{Nomad: p.Nomad, Consul: p.Consul, NomadAddr: p.NomadAddr,
			ConsulAddr: p.ConsulAddr, Domain: "localhost"})
		fmt.Fprintf(out, "loadtest: applying %s (%s settings)\n", specPath, sh.Name)
		res, err := ctl.Apply(ctx, control.ApplyOptions{Spec: spec, Source: src, Keep: control.DefaultKeep})
		if err != nil {
			return nil, err
		}
		revision, url = res.Revision, res.URL
		return []string{fmt.Sprintf("%s is revision %s", res.URL, res.Revision)}, nil
	}
	// The rollout's change: the same spec with Update applied.
	update := func(ctx context.Context) (string, error) {
		next := *spec
		sh.Update(&next)
		if err := next.Autoscaling.Validate(); err != nil {
			return "", err
		}
		res, err := ctl.Apply(ctx, control.ApplyOptions{Spec: &next, Source: src, Keep: control.DefaultKeep})
		if err != nil {
			return "", err
		}
		return res.Revision, nil
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var (
		benchE error
		wg     sync.WaitGroup
	)
	ready := func(p devenv.Platform) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancelRun() // the bench is over: tear the platform down
			b := &bench{o: o, sh: sh, p: p, gw: gw, sc: sc, rev: revision, url: url, update: update, out: out}
			rep, benchE = b.run(runCtx)
		}()
	}
	err = devenv.Run(runCtx, devenv.Config{Dir: filepath.Join(dir, "dev"), ConsulPort: ports[0], NomadPort: ports[1],
		Daemons: []devenv.Daemon{gwd, scd}, Deploy: deploy, Out: out, Logger: logger, Ready: ready})
	cancelRun()
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("platform: %w (logs in %s; run with -keep to keep them)", err, dir)
	}
	if benchE != nil {
		return nil, benchE
	}
	if ctx.Err() != nil {
		return nil, errors.New("interrupted")
	}
	return rep, nil
}

// bench is one shape's run on a platform that is up.
type bench struct {
	o        options
	sh       shape
	p        devenv.Platform
	gw       *gateway.Gateway
	sc       *scaler.Scaler
	rev, url string
	update   func(ctx context.Context) (string, error)
	out      io.Writer
}

// run drives the load and samples Nomad; it returns what it measured.
func (b *bench) run(ctx context.Context) (*report, error) {
	o, sh, p, out, rev := b.o, b.sh, b.p, b.out, b.rev
	if sh.FromZero {
		// Start from zero. Waiting for the scaler to get there would cost the example's whole
		// stable window plus grace (90 s); setting the count directly is what the scaler would
		// do, and it keeps zero because it sees no traffic. The scaler adopts the count on its
		// next tick; until then it believes one instance runs and would not take the activation path
		// from zero, so waitZero waits for that too.
		zero := 0
		if _, _, err := p.Nomad.Jobs().Scale(rev, revmeta.Group, &zero, "loadtest: start from zero", false,
			map[string]any{"by": "loadtest"}, (&nomadapi.WriteOptions{}).WithContext(ctx)); err != nil {
			return nil, fmt.Errorf("scale %s to zero: %w", rev, err)
		}
		fmt.Fprintf(out, "loadtest: %s scaled to zero; waiting for its instance to stop\n", rev)
		if err := waitZero(ctx, p.Nomad, b.gw.AdminAddr(), b.sc.AdminAddr(), rev); err != nil {
			return nil, err
		}
	}
	if sh.Ready > 0 {
		fmt.Fprintf(out, "loadtest: waiting for the gateway to route to %d instances of %s\n", sh.Ready, rev)
		if err := waitRouted(ctx, b.gw.AdminAddr(), rev, sh.Ready); err != nil {
			return nil, err
		}
	}

	total := sh.Duration()
	fmt.Fprintf(out, "loadtest: %s: %s, then %s idle (%s in all)\n", sh.Name, phaseList(sh.Phases), sh.Cooldown, total)
	target := fmt.Sprintf("%s/?sleep=%d", b.url, o.sleep)
	client := loadgen.Client(b.gw.PublicAddr(), o.maxInFlight, o.timeout)
	defer client.CloseIdleConnections()
	start := time.Now()
	rec := loadgen.NewRecorder(start)
	var (
		mu    sync.Mutex
		first time.Duration // the longest cold-start wait the gateway reported: the first requests'
		cold  int
	)
	gens := []struct {
		g    *loadgen.Generator
		rate loadgen.Rate
	}{{&loadgen.Generator{
		Client: client,
		NewRequest: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		},
		MaxInFlight: o.maxInFlight,
		Recorder:    rec,
		Observe: func(resp *http.Response) {
			if v := resp.Header.Get(gateway.ColdStartHeader); v != "" {
				d, _ := time.ParseDuration(v)
				mu.Lock()
				cold++
				first = max(first, d)
				mu.Unlock()
			}
		},
	}, sh.Rate(false)}}
	if sh.HasDirect() {
		// Knative's "deployment" target: a Service over the same pods, no Knative on the
		// path. Here: the instances' own addresses from Consul, in turn.
		addrs, err := instanceAddrs(ctx, p, rev)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "loadtest: direct baseline over %d instances: %s\n", len(addrs), strings.Join(addrs, " "))
		direct := directClient(o.maxInFlight, o.timeout)
		defer direct.CloseIdleConnections()
		rr := &roundRobin{urls: make([]string, len(addrs))}
		for i, a := range addrs {
			rr.urls[i] = fmt.Sprintf("http://%s/?sleep=%d", a, o.sleep)
		}
		gens = append(gens, struct {
			g    *loadgen.Generator
			rate loadgen.Rate
		}{&loadgen.Generator{Client: direct, MaxInFlight: o.maxInFlight, Recorder: rec,
			NewRequest: func(ctx context.Context) (*http.Request, error) {
				return http.NewRequestWithContext(ctx, http.MethodGet, rr.next(), nil)
			}}, sh.Rate(true)})
	}
	loadStart := loadAvg()
	samples := newSampler(p.Nomad, rev, start)
	sctx, stopSampling := context.WithCancel(ctx)
	var swg sync.WaitGroup
	swg.Add(1)
	go func() { defer swg.Done(); samples.run(sctx) }()

	// The rollout: the changed spec applied UpdateAt into the run, as Knative's probe
	// updates the ksvc; the apply returns once the new revision is ready and routed.
	var (
		events  []event
		newRev  string
		updateE error
		evMu    sync.Mutex
	)
	if sh.Update != nil {
		swg.Add(1)
		go func() {
			defer swg.Done()
			select {
			case <-sctx.Done():
				return
			case <-time.After(time.Until(start.Add(sh.UpdateAt))):
			}
			t0 := time.Since(start)
			fmt.Fprintf(out, "  t=%3ds applying the changed spec (min scale → 1)\n", int(t0/time.Second))
			r, err := b.update(sctx)
			t1 := time.Since(start)
			evMu.Lock()
			defer evMu.Unlock()
			events = append(events, event{At: t0.Seconds(), Label: "apply"})
			if err != nil {
				updateE = fmt.Errorf("apply the changed spec: %w", err)
				fmt.Fprintf(out, "  t=%3ds %v\n", int(t1/time.Second), updateE)
				return
			}
			newRev = r
			samples.add(r)
			events = append(events, event{At: t1.Seconds(), Label: r + " routed"})
			fmt.Fprintf(out, "  t=%3ds %s is ready and takes the traffic (apply took %s)\n", int(t1/time.Second), r, (t1 - t0).Round(time.Millisecond))
		}()
	}

	progress := time.NewTicker(10 * time.Second)
	done := make(chan struct{})
	var gwg sync.WaitGroup
	for _, g := range gens {
		gwg.Add(1)
		go func() { defer gwg.Done(); g.g.Run(ctx, g.rate, total) }()
	}
	go func() { gwg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-progress.C:
			secs := rec.Seconds()
			if n := len(secs); n >= 2 {
				s := secs[n-2] // the last complete second
				d, r := samples.at(s.T)
				fmt.Fprintf(out, "  t=%3ds offered %4d/s achieved %4d/s p95 %6s ms errors %d shed %d instances %d desired %d ready\n",
					s.T, s.Offered, s.Achieved, ms(s.P95), s.Errors, s.Shed, d, r)
			}
		}
	}
	progress.Stop()
	stopSampling()
	swg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	secs := rec.Seconds()
	n := int(total / time.Second)
	rep := &report{
		Title:   b.title(),
		Load:    fmt.Sprintf("load: %s, then %s idle; open model, loopback", phaseList(sh.Phases), sh.Cooldown),
		Started: start, Errors: rec.ErrorTexts(), All: rec.Totals(0, -1), SLA: sh.P95Max,
		Events: events, NewRevision: newRev, Scaled: sh.Scaled, NoStepVerdict: sh.Name != shapeLoadTest,
	}
	for i := 0; i < n; i++ {
		el := time.Duration(i) * time.Second
		r := row{Second: loadgen.Second{T: i}, Target: sh.Target(el), NewDesired: -1, NewReady: -1}
		if i < len(secs) {
			r.Second = secs[i]
		}
		r.Desired, r.Ready = samples.at(i)
		if newRev != "" {
			r.NewDesired, r.NewReady = samples.atRev(newRev, i)
		}
		rep.Rows = append(rep.Rows, r)
	}
	var in gateInput
	for i, s := range sh.Steps() {
		st := stepStats{step: s, Totals: rec.Totals(s.From, s.To)}
		for _, x := range rep.Rows[s.From:min(s.To, len(rep.Rows))] {
			st.MaxDesired, st.MaxReady = max(st.MaxDesired, x.Desired), max(st.MaxReady, x.Ready)
		}
		rep.Steps, rep.Stats = append(rep.Steps, s), append(rep.Stats, st)
		if i == 0 && sh.FromZero && s.To-s.From > wakeSecs {
			rep.AfterWake = rec.Totals(wakeSecs, s.To)
		}
		in.Seconds += float64(s.To - s.From)
	}
	// The gates see every request of each path, as Knative's reporters do: its phases are
	// one span of seconds, and the recorder buckets each request by the second it was sent.
	in.Expected = sh.expected()
	if from, to := sh.span(false); to > from {
		in.Gateway = rec.Totals(from, to)
	}
	if from, to := sh.span(true); to > from {
		in.Direct = rec.Totals(from, to)
	}
	rep.Gates = sh.gates(in)
	if updateE != nil {
		rep.Gates = append(rep.Gates, gate{Shape: sh.Name, Name: "rollout applied", Target: "yes", Measured: updateE.Error()})
	}
	rep.ColdStart, rep.ColdRequests = first, cold
	rep.Notes = append(rep.Notes,
		"latency is measured from each request's scheduled send time (open model), so generator lag is counted, not hidden")
	if sh.FromZero {
		rep.Notes = append(rep.Notes, "the revision was put at zero with Nomad's Jobs.Scale before the load; the scaler did every scaling after that")
	}
	// The platform, the apps and the generator share this machine's CPUs: other work on
	// it shows up as latency, so the run says how busy the machine was.
	rep.Notes = append(rep.Notes, fmt.Sprintf("load average (1 min) %s at the start of the load, %s at the end, on %d CPUs", loadStart, loadAvg(), runtime.NumCPU()))
	return rep, nil
}

func (b *bench) title() string {
	if b.sh.Name == shapeLoadTest && b.sh.Tune == nil {
		return fmt.Sprintf("rouse bench-load: examples/autoscale, ?sleep=%d, concurrency target 10, from zero", b.o.sleep)
	}
	return fmt.Sprintf("rouse %s (Knative's shape): examples/autoscale, ?sleep=%d", b.sh.Name, b.o.sleep)
}

func phaseList(ps []phase) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s for %s", p.Label, p.D)
	}
	return strings.Join(parts, ", ")
}

func writeReport(dir, base, summary string, rep *report, out io.Writer) error {
	names := []string{filepath.Join(dir, base+".csv"), filepath.Join(dir, base+".svg"), filepath.Join(dir, summary)}
	writers := []func(io.Writer) error{
		func(w io.Writer) error { return writeCSV(w, rep.Rows, rep.NewRevision != "") },
		func(w io.Writer) error { return writeSVG(w, rep) },
		func(w io.Writer) error { return writeSummary(w, rep) },
	}
	for i, name := range names {
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		if err := writers[i](f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	fmt.Fprintln(out)
	if err := writeSummary(out, rep); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s\n", strings.Join(names, ", "))
	return nil
}

// loadAvg is the 1-minute load average from /proc/loadavg ("?" where there is none).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// waitZero waits until Nomad runs no instance of rev, the gateway routes to none and the
// scaler wants none.
func waitZero(ctx context.Context, nomad *nomadapi.Client, adminAddr, scalerAddr, rev string) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		st, _, err := nomad.Jobs().ScaleStatus(rev, (&nomadapi.QueryOptions{}).WithContext(ctx))
		running := -1
		if err == nil {
			if tg, ok := st.TaskGroups[revmeta.Group]; ok {
				running = tg.Running
			}
		}
		if running == 0 && gatewayReady(ctx, adminAddr, rev) == 0 && scalerDesired(ctx, scalerAddr, rev) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not get to zero instances: %w", rev, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// gatewayReady is the number of instances of rev the gateway routes to (-1 on error).
func gatewayReady(ctx context.Context, adminAddr, rev string) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/gauges", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	r, err := gauges.Read(resp.Body)
	if err != nil {
		return -1
	}
	for _, v := range r.Revisions {
		if v.Revision == rev {
			return int(v.Ready)
		}
	}
	return 0
}

// scalerDesired is the count the scaler wants for rev, from its /decisions table
// (-1 when it does not list rev or cannot be read).
func scalerDesired(ctx context.Context, scalerAddr, rev string) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+scalerAddr+"/decisions", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	// REVISION  READY  DESIRED  REASON ...
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && strings.HasSuffix(f[0], "/"+rev) {
			if n, err := strconv.Atoi(f[2]); err == nil {
				return n
			}
		}
	}
	return -1
}

// waitRouted waits until the gateway routes to at least n instances of rev.
func waitRouted(ctx context.Context, adminAddr, rev string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for gatewayReady(ctx, adminAddr, rev) < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the gateway did not route to %d instances of %s: %w", n, rev, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}

// instanceAddrs are the host:port of rev's instances whose Consul check passes.
func instanceAddrs(ctx context.Context, p devenv.Platform, rev string) ([]string, error) {
	entries, _, err := p.Consul.Health().Service(rev, "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("instances of %s: %w", rev, err)
	}
	var addrs []string
	for _, e := range entries {
		host := cmp.Or(e.Service.Address, e.Node.Address)
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no instance of %s passes its check", rev)
	}
	sort.Strings(addrs)
	return addrs, nil
}

// directClient is loadgen.Client's transport for many addresses: each request goes to its
// URL's host.
func directClient(conns int, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext,
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 60 * time.Second, DisableCompression: true}}
}

// roundRobin hands out its URLs in turn; safe for concurrent use.
type roundRobin struct {
	urls []string
	n    atomic.Uint64
}

func (r *roundRobin) next() string { return r.urls[(r.n.Add(1)-1)%uint64(len(r.urls))] }

// sampler reads the revisions' desired and running counts from Nomad once a second.
type sampler struct {
	nomad *nomadapi.Client
	start time.Time

	first  string // the revision under test at the start
	mu     sync.Mutex
	revs   []string
	counts map[string]map[int][2]int // revision → second → desired, running
}

func newSampler(nomad *nomadapi.Client, rev string, start time.Time) *sampler {
	return &sampler{nomad: nomad, first: rev, revs: []string{rev}, start: start, counts: map[string]map[int][2]int{rev: {}}}
}

// add samples rev too from now on.
func (s *sampler) add(rev string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.counts[rev]; !ok {
		s.revs = append(s.revs, rev)
		s.counts[rev] = map[int][2]int{}
	}
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.mu.Lock()
		revs := append([]string(nil), s.revs...)
		s.mu.Unlock()
		for _, rev := range revs {
			st, _, err := s.nomad.Jobs().ScaleStatus(rev, (&nomadapi.QueryOptions{}).WithContext(ctx))
			if err == nil {
				if tg, ok := st.TaskGroups[revmeta.Group]; ok {
					i := int(time.Since(s.start) / time.Second)
					s.mu.Lock()
					s.counts[rev][i] = [2]int{tg.Desired, tg.Running}
					s.mu.Unlock()
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// at is the first revision's sample of second i, or the latest one before it (-1, -1 when none).
func (s *sampler) at(i int) (desired, ready int) { return s.atRev(s.first, i) }

// atRev is rev's sample of second i, or the latest one before it (-1, -1 when none).
func (s *sampler) atRev(rev string, i int) (desired, ready int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for j := i; j >= max(0, i-3); j-- {
		if c, ok := s.counts[rev][j]; ok {
			return c[0], c[1]
		}
	}
	return -1, -1
}
