// loadtest is `make bench-load`: Knative's autoscaling load test scaled to one machine.
// It brings up the whole platform on loopback (Consul and Nomad dev agents, the gateway
// and the scaler in this process), deploys examples/autoscale, scales it to zero, then
// offers ?sleep=100 requests at 300, 600 and 900 per second in steps, and records every
// second: offered and achieved rate, p50/p95 latency, errors, and the instances Nomad was
// asked for and runs. It writes load.csv, load.svg and summary.txt to -out, and stops
// everything it started.
//
//	go run ./examples/loadtest -out bench-results -step 60s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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
	step        time.Duration
	rates       []float64
	cooldown    time.Duration
	sleep       int
	maxInFlight int
	timeout     time.Duration
}

func main() {
	o := options{}
	rates := "300,600,900"
	flag.StringVar(&o.out, "out", "bench-results", "folder for load.csv, load.svg and summary.txt")
	flag.StringVar(&o.dir, "dir", "", "folder for agent state and logs (default: a temporary folder, removed at the end)")
	flag.BoolVar(&o.keep, "keep", false, "keep the state and logs folder")
	flag.DurationVar(&o.step, "step", 60*time.Second, "duration of each load step")
	flag.StringVar(&rates, "rates", rates, "requests per second of each step, comma-separated")
	flag.DurationVar(&o.cooldown, "cooldown", 20*time.Second, "time recorded after the last step, with no load")
	flag.IntVar(&o.sleep, "sleep", 100, "?sleep= of each request, in ms")
	flag.IntVar(&o.maxInFlight, "max-inflight", 2000, "bound on requests in flight; arrivals beyond it are shed and counted")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout")
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
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	root, err := agents.ModuleRoot()
	if err != nil {
		return err
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "rouse-loadtest-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}

	// The app the platform runs, built for this run.
	binDir := filepath.Join(dir, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(binDir, "autoscale"), "./examples/autoscale")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./examples/autoscale: %v\n%s", err, b)
	}
	specPath := filepath.Join(root, "examples", "autoscale", "service.hcl")
	spec, files, diags := jobspec.ParseFiles([]string{specPath}, map[string]string{"bin": binDir})
	if diags.HasErrors() {
		return fmt.Errorf("%s: %s", specPath, diags.Error())
	}
	src := ""
	for _, f := range files {
		src = string(f.Bytes)
	}

	logPath := filepath.Join(dir, "rouse.log")
	logger, err := devd.FileLogger(logPath)
	if err != nil {
		return err
	}
	defer logger.Sync()
	ports, err := agents.FreePorts(2)
	if err != nil {
		return err
	}

	var (
		gw *gateway.Gateway
		sc *scaler.Scaler
	)
	// The access log is off: at 900 rps it would measure the disk as much as the gateway.
	gwd := devd.GatewayDaemon(gateway.Config{PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Domain: "localhost",
		Logger: logger.Named("gateway"), AccessLog: zap.NewNop(), Register: true, ID: "loadtest"},
		func(g *gateway.Gateway) { gw = g })
	scd := devd.ScalerDaemon(scaler.Config{Logger: logger.Named("scaler"), AdminAddr: "127.0.0.1:0", ID: "loadtest"},
		func(s *scaler.Scaler) { sc = s })
	var revision, url string
	deploy := func(ctx context.Context, p devenv.Platform) ([]string, error) {
		c := control.New(control.Config{Nomad: p.Nomad, Consul: p.Consul, NomadAddr: p.NomadAddr,
			ConsulAddr: p.ConsulAddr, Domain: "localhost"})
		fmt.Fprintf(out, "loadtest: applying %s\n", specPath)
		res, err := c.Apply(ctx, control.ApplyOptions{Spec: spec, Source: src, Keep: control.DefaultKeep})
		if err != nil {
			return nil, err
		}
		revision, url = res.Revision, res.URL
		return []string{fmt.Sprintf("%s is revision %s", res.URL, res.Revision)}, nil
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var (
		rep    *report
		benchE error
		wg     sync.WaitGroup
	)
	ready := func(p devenv.Platform) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancelRun() // the bench is over: tear the platform down
			rep, benchE = bench(runCtx, o, p, gw, sc, revision, url, out)
		}()
	}
	err = devenv.Run(runCtx, devenv.Config{Dir: filepath.Join(dir, "dev"), ConsulPort: ports[0], NomadPort: ports[1],
		Daemons: []devenv.Daemon{gwd, scd}, Deploy: deploy, Out: out, Logger: logger, Ready: ready})
	cancelRun()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("platform: %w (logs in %s; run with -keep to keep them)", err, dir)
	}
	if benchE != nil {
		return benchE
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return writeReport(o.out, rep, out)
}

// bench drives the load and samples Nomad; it returns what it measured.
func bench(ctx context.Context, o options, p devenv.Platform, gw *gateway.Gateway, sc *scaler.Scaler, rev, url string, out io.Writer) (*report, error) {
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
	if err := waitZero(ctx, p.Nomad, gw.AdminAddr(), sc.AdminAddr(), rev); err != nil {
		return nil, err
	}

	total := time.Duration(len(o.rates))*o.step + o.cooldown
	fmt.Fprintf(out, "loadtest: offering %v rps, %s each, then %s idle (%s in all)\n", o.rates, o.step, o.cooldown, total)
	target := fmt.Sprintf("%s/?sleep=%d", url, o.sleep)
	client := loadgen.Client(gw.PublicAddr(), o.maxInFlight, o.timeout)
	defer client.CloseIdleConnections()
	start := time.Now()
	rec := loadgen.NewRecorder(start)
	var (
		mu    sync.Mutex
		first time.Duration // the longest cold-start wait the gateway reported: the first requests'
		cold  int
	)
	g := &loadgen.Generator{
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
	}
	loadStart := loadAvg()
	samples := newSampler(p.Nomad, rev, start)
	sctx, stopSampling := context.WithCancel(ctx)
	var swg sync.WaitGroup
	swg.Add(1)
	go func() { defer swg.Done(); samples.run(sctx) }()
	progress := time.NewTicker(10 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx, loadgen.Steps(o.step, o.rates...), total)
	}()
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
		Title:   fmt.Sprintf("rouse bench-load: examples/autoscale, ?sleep=%d, concurrency target 10, from zero", o.sleep),
		Load:    fmt.Sprintf("load: %s rps, %s per step, then %s idle; open model, loopback", rateList(o.rates), o.step, o.cooldown),
		Started: start, Errors: rec.ErrorTexts(), All: rec.Totals(0, -1),
	}
	for i := 0; i < n; i++ {
		r := row{Second: loadgen.Second{T: i}, Target: loadgen.Steps(o.step, o.rates...)(time.Duration(i) * time.Second)}
		if i < len(secs) {
			r.Second = secs[i]
		}
		r.Desired, r.Ready = samples.at(i)
		rep.Rows = append(rep.Rows, r)
	}
	stepSecs := int(o.step / time.Second)
	for i, rps := range o.rates {
		s := step{RPS: rps, From: i * stepSecs, To: (i + 1) * stepSecs}
		st := stepStats{step: s, Totals: rec.Totals(s.From, s.To)}
		for _, x := range rep.Rows[s.From:min(s.To, len(rep.Rows))] {
			st.MaxDesired, st.MaxReady = max(st.MaxDesired, x.Desired), max(st.MaxReady, x.Ready)
		}
		rep.Steps, rep.Stats = append(rep.Steps, s), append(rep.Stats, st)
		if i == 0 && stepSecs > wakeSecs {
			rep.AfterWake = rec.Totals(wakeSecs, s.To)
		}
	}
	rep.ColdStart, rep.ColdRequests = first, cold
	rep.Notes = append(rep.Notes,
		"latency is measured from each request's scheduled send time (open model), so generator lag is counted, not hidden",
		"the revision was put at zero with Nomad's Jobs.Scale before the load; the scaler did every scaling after that",
		// The platform, the apps and the generator share this machine's CPUs: other work on
		// it shows up as latency, so the run says how busy the machine was.
		fmt.Sprintf("load average (1 min) %s at the start of the load, %s at the end, on %d CPUs", loadStart, loadAvg(), runtime.NumCPU()))
	return rep, nil
}

func writeReport(dir string, rep *report, out io.Writer) error {
	for name, write := range map[string]func(io.Writer) error{
		"load.csv":    func(w io.Writer) error { return writeCSV(w, rep.Rows) },
		"load.svg":    func(w io.Writer) error { return writeSVG(w, rep) },
		"summary.txt": func(w io.Writer) error { return writeSummary(w, rep) },
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
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
	fmt.Fprintf(out, "\nwrote %s\n", strings.Join([]string{filepath.Join(dir, "load.csv"), filepath.Join(dir, "load.svg"), filepath.Join(dir, "summary.txt")}, ", "))
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

func rateList(rates []float64) string {
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = strconv.FormatFloat(r, 'f', -1, 64)
	}
	return strings.Join(parts, " → ")
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

// sampler reads the revision's desired and running counts from Nomad once a second.
type sampler struct {
	nomad *nomadapi.Client
	rev   string
	start time.Time

	mu      sync.Mutex
	desired map[int]int
	ready   map[int]int
}

func newSampler(nomad *nomadapi.Client, rev string, start time.Time) *sampler {
	return &sampler{nomad: nomad, rev: rev, start: start, desired: map[int]int{}, ready: map[int]int{}}
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st, _, err := s.nomad.Jobs().ScaleStatus(s.rev, (&nomadapi.QueryOptions{}).WithContext(ctx))
		if err == nil {
			if tg, ok := st.TaskGroups[revmeta.Group]; ok {
				i := int(time.Since(s.start) / time.Second)
				s.mu.Lock()
				s.desired[i], s.ready[i] = tg.Desired, tg.Running
				s.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// at is the sample of second i, or the latest one before it (-1, -1 when none).
func (s *sampler) at(i int) (desired, ready int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for j := i; j >= max(0, i-3); j-- {
		if d, ok := s.desired[j]; ok {
			return d, s.ready[j]
		}
	}
	return -1, -1
}
