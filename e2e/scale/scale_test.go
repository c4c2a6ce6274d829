// Package scale measures rouse at a thousand and ten thousand services on real agents:
// `rouse apply` latency, route-change propagation to every gateway, the bytes each
// gateway moves per change, the route table's build time and heap, and a real scaler
// tick. It is a benchmark only (`make bench-scale`): `go test ./...` compiles it and runs
// nothing, so `make test` stays fast.
package scale

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/gateway/table"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/scaler"
)

// params are the knobs of one run, from the environment (SCALE_*), so `make bench-scale`
// can be made smaller or larger without editing code.
type params struct {
	services int           // real services applied through the CLI
	big      int           // services in KV for the second round (records written through internal/store)
	changes  int           // route changes timed per round
	gateways int           // gateways following KV
	parallel int           // CLI applies in flight at once
	applyFor time.Duration // the apply phase stops after this, however far it got
	budget   time.Duration // the whole run
	ticks    int           // scaler ticks measured
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDur(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func paramsFromEnv() params {
	return params{
		services: envInt("SCALE_SERVICES", 1000),
		big:      envInt("SCALE_BIG", 10000),
		changes:  envInt("SCALE_CHANGES", 50),
		gateways: envInt("SCALE_GATEWAYS", 2),
		parallel: envInt("SCALE_APPLY_PARALLEL", 1),
		applyFor: envDur("SCALE_APPLY_FOR", 9*time.Minute),
		budget:   envDur("SCALE_BUDGET", 15*time.Minute),
		ticks:    envInt("SCALE_TICKS", 10),
	}
}

const domain = "scale.test"

// BenchmarkScale is the whole run; it ignores b.N (run it with -benchtime 1x) and prints
// its tables to stdout.
func BenchmarkScale(b *testing.B) {
	p := paramsFromEnv()
	ctx, cancel := context.WithTimeout(context.Background(), p.budget)
	defer cancel()
	c, err := testcluster.Start(testcluster.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	defer func() {
		if b.Failed() {
			c.DumpLogs(os.Stderr)
		}
	}()
	rouseBin, err := c.GoBuild("./cmd/rouse")
	if err != nil {
		b.Fatal(err)
	}
	hello, err := c.GoBuild("./examples/hello")
	if err != nil {
		b.Fatal(err)
	}
	r := &report{p: p, start: time.Now()}
	defer r.print(os.Stdout)

	gws := startGateways(ctx, b, c, p.gateways, "a")
	r.applies = applyServices(ctx, b, c, rouseBin, hello, p)
	n := r.applies.done
	if n == 0 {
		b.Fatal("no service applied")
	}
	waitTables(ctx, b, gws, n)
	// Right after the burst of applies (the journal still holds it), then in steady state.
	r.rounds = append(r.rounds, measureRound(ctx, b, c, gws, n, p.changes, "after the applies"))
	compactJournal(ctx, b, c)
	r.rounds = append(r.rounds, measureRound(ctx, b, c, gws, n, p.changes, "journal compacted"))
	r.builds = append(r.builds, measureBuild(b, c, n))
	r.tick = measureTicks(ctx, b, c, p.ticks)
	stopGateways(gws)

	if ctx.Err() == nil && p.big > n {
		// The bulk load runs with no gateway following: the burst is not what is measured.
		r.bulk = writeRecords(ctx, b, c, n, p.big)
		compactJournal(ctx, b, c)
		gws = startGateways(ctx, b, c, p.gateways, "b")
		r.firstLoad = waitTables(ctx, b, gws, p.big)
		r.rounds = append(r.rounds, measureRound(ctx, b, c, gws, p.big, p.changes, "journal compacted"))
		r.builds = append(r.builds, measureBuild(b, c, p.big))
		stopGateways(gws)
	}
	// Purge the jobs in parallel: the cluster's sequential purge has 45 s for all of them.
	purgeJobs(c, r.applies.names)
}

// counter counts the bytes a Consul client moves: on the wire (every connection its
// transport dials) and the decoded bodies of the KV reads (/v1/kv, /v1/txn).
type counter struct {
	wireIn, wireOut atomic.Int64
	kvBody          atomic.Int64
	kvReqs          atomic.Int64
}

type countConn struct {
	net.Conn
	c *counter
}

func (c countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.wireIn.Add(int64(n))
	return n, err
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.wireOut.Add(int64(n))
	return n, err
}

type countBody struct {
	io.ReadCloser
	c *counter
}

func (b countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.kvBody.Add(int64(n))
	return n, err
}

type countRT struct {
	next http.RoundTripper
	c    *counter
}

func (t countRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil && (strings.HasPrefix(req.URL.Path, "/v1/kv/") || req.URL.Path == "/v1/txn") {
		t.c.kvReqs.Add(1)
		resp.Body = countBody{resp.Body, t.c}
	}
	return resp, err
}

// countingClient is a Consul client whose every byte is counted.
func countingClient(addr string) (*consulapi.Client, *counter, error) {
	cnt := &counter{}
	tr := consulapi.DefaultConfig().Transport
	dial := (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		conn, err := dial(ctx, network, a)
		if err != nil {
			return nil, err
		}
		return countConn{conn, cnt}, nil
	}
	cl, err := consulapi.NewClient(&consulapi.Config{Address: addr, HttpClient: &http.Client{Transport: countRT{tr, cnt}}})
	return cl, cnt, err
}

type gw struct {
	g    *gateway.Gateway
	cnt  *counter
	stop context.CancelFunc
	done chan struct{}
}

func startGateways(ctx context.Context, b *testing.B, c *testcluster.Cluster, n int, round string) []*gw {
	var out []*gw
	for i := range n {
		cl, cnt, err := countingClient(c.ConsulAddr)
		if err != nil {
			b.Fatal(err)
		}
		g, err := gateway.New(gateway.Config{PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Domain: domain,
			Consul: cl, Logger: zap.NewNop(), Register: true, ID: fmt.Sprintf("scale-gw-%s%d", round, i)})
		if err != nil {
			b.Fatal(err)
		}
		gctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = g.Run(gctx) }()
		out = append(out, &gw{g: g, cnt: cnt, stop: stop, done: done})
	}
	return out
}

func stopGateways(gws []*gw) {
	for _, g := range gws {
		g.stop()
	}
	for _, g := range gws {
		<-g.done
	}
}

func svcName(i int) string { return fmt.Sprintf("s%05d", i) }

// waitTables waits until every gateway serves a table with at least n services' hosts and
// returns how long that took from the call.
func waitTables(ctx context.Context, b *testing.B, gws []*gw, n int) time.Duration {
	start := time.Now()
	for _, g := range gws {
		for {
			if t := g.g.Table(); t != nil && t.Lookup([]byte(svcName(n-1)+".default."+domain)) != nil && t.Len() >= n {
				break
			}
			if ctx.Err() != nil {
				b.Fatalf("gateway %s: no table with %d services before the deadline", g.g.ID(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// applyResult is phase a: CLI applies.
type applyResult struct {
	done, failed int
	took         time.Duration
	lat          []time.Duration // per apply, in order
	names        []string
	lastErr      string
}

func applyServices(ctx context.Context, b *testing.B, c *testcluster.Cluster, rouseBin, hello string, p params) applyResult {
	dir := b.TempDir()
	env := append(os.Environ(), c.Env()...)
	res := applyResult{lat: make([]time.Duration, p.services), names: make([]string, p.services)}
	actx, cancel := context.WithTimeout(ctx, p.applyFor)
	defer cancel()
	var next atomic.Int64
	var mu sync.Mutex
	ok := make([]bool, p.services)
	start := time.Now()
	var wg sync.WaitGroup
	for range p.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for actx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= p.services {
					return
				}
				name := svcName(i)
				file := filepath.Join(dir, name+".hcl")
				spec := fmt.Sprintf(`service %q {
  namespace = "default"
  driver    = "raw_exec"
  command   = %q
  resources {
    cpu    = 20
    memory = 16
  }
  readiness { path = "/healthz" }
  autoscaling {
    min     = 0
    initial = 0
    max     = 2
  }
}
`, name, hello)
				if err := os.WriteFile(file, []byte(spec), 0o644); err != nil {
					b.Error(err)
					return
				}
				t0 := time.Now()
				cmd := exec.CommandContext(actx, rouseBin, "apply", "-f", file, "-o", "json")
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				d := time.Since(t0)
				mu.Lock()
				res.lat[i], res.names[i] = d, name
				if err != nil {
					if actx.Err() == nil {
						res.failed++
						res.lastErr = strings.TrimSpace(string(out))
					}
				} else {
					ok[i] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.took = time.Since(start)
	// Only the leading run of successes counts: the rounds below need services 0..done-1.
	for res.done < p.services && ok[res.done] {
		res.done++
	}
	res.lat, res.names = res.lat[:res.done], res.names[:res.done]
	return res
}

// round is one propagation measurement: changes to one service's route, timed until
// every gateway's table has it, and the bytes each gateway moved meanwhile.
type round struct {
	services     int
	prop         []time.Duration // until the last gateway has it
	first        []time.Duration // until the first gateway has it
	wireIn       float64         // bytes received from Consul per change per gateway
	wireOut      float64         // bytes sent per change per gateway
	kvBody       float64         // decoded KV/txn response bytes per change per gateway
	kvReqs       float64         // KV/txn requests per change per gateway
	gateways     int
	cpuPerChange time.Duration // process CPU (gateways + Consul client side) per change
	when         string
}

func measureRound(ctx context.Context, b *testing.B, c *testcluster.Cluster, gws []*gw, n, changes int, when string) round {
	st := store.New(c.Consul)
	target := svcName(n / 2)
	rd := round{services: n, gateways: len(gws), when: when}
	time.Sleep(2 * time.Second) // let the gateways' publishes and peers settle
	var in0, out0, body0, req0 int64
	for _, g := range gws {
		in0 += g.cnt.wireIn.Load()
		out0 += g.cnt.wireOut.Load()
		body0 += g.cnt.kvBody.Load()
		req0 += g.cnt.kvReqs.Load()
	}
	cpu0 := processCPU()
	for i := range changes {
		if ctx.Err() != nil {
			break
		}
		tag := fmt.Sprintf("c%d", i)
		host := []byte(tag + "-" + target + ".default." + domain)
		t0 := time.Now()
		_, err := st.UpdateService(ctx, "default", target, func(cur *store.Service) (*store.Service, error) {
			if cur == nil || len(cur.Route) == 0 {
				return nil, fmt.Errorf("service %s has no route", target)
			}
			cur.Route = []store.RouteTarget{{Revision: cur.Route[0].Revision, Percent: 100, Tag: tag}}
			return cur, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		var first time.Duration
		for _, g := range gws {
			for {
				if t := g.g.Table(); t != nil && t.Lookup(host) != nil {
					break
				}
				if time.Since(t0) > 30*time.Second {
					b.Fatalf("gateway %s did not serve %s within 30 s", g.g.ID(), host)
				}
				time.Sleep(200 * time.Microsecond)
			}
			if first == 0 {
				first = time.Since(t0)
			}
		}
		rd.prop = append(rd.prop, time.Since(t0))
		rd.first = append(rd.first, first)
		time.Sleep(100 * time.Millisecond) // the publish and peers traffic of this change lands in it
	}
	time.Sleep(time.Second)
	var in1, out1, body1, req1 int64
	for _, g := range gws {
		in1 += g.cnt.wireIn.Load()
		out1 += g.cnt.wireOut.Load()
		body1 += g.cnt.kvBody.Load()
		req1 += g.cnt.kvReqs.Load()
	}
	k := float64(len(rd.prop) * len(gws))
	rd.wireIn, rd.wireOut = float64(in1-in0)/k, float64(out1-out0)/k
	rd.kvBody, rd.kvReqs = float64(body1-body0)/k, float64(req1-req0)/k
	rd.cpuPerChange = (processCPU() - cpu0) / time.Duration(max(len(rd.prop), 1))
	return rd
}

// build is the table's build time and heap for the real snapshot of n services.
type build struct {
	services     int
	listBytes    int // decoded values in the listing
	decode       time.Duration
	build        []time.Duration
	heapPerSvc   float64 // table only
	heapSnapshot float64 // decoded snapshot, per service
}

func measureBuild(b *testing.B, c *testcluster.Cluster, n int) build {
	pairs, _, err := c.Consul.KV().List(store.Prefix, nil)
	if err != nil {
		b.Fatal(err)
	}
	bd := build{services: n}
	for _, p := range pairs {
		bd.listBytes += len(p.Key) + len(p.Value)
	}
	var m0, m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	t0 := time.Now()
	snap, _ := store.Decode(pairs)
	bd.decode = time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	var keep *table.Table
	for range 5 {
		t0 := time.Now()
		keep = table.Build(snap, domain, "internal."+domain)
		bd.build = append(bd.build, time.Since(t0))
		if keep.Len() == 0 {
			b.Fatal("empty table")
		}
	}
	keep = nil
	runtime.GC()
	t := table.Build(snap, domain, "internal."+domain)
	runtime.GC()
	runtime.ReadMemStats(&m2)
	bd.heapSnapshot = float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(n)
	bd.heapPerSvc = float64(int64(m2.HeapAlloc)-int64(m1.HeapAlloc)) / float64(n)
	runtime.KeepAlive(t)
	runtime.KeepAlive(snap)
	runtime.KeepAlive(pairs)
	_ = keep
	return bd
}

// measureTicks runs a real scaler (leader, real Nomad with the applied revisions, the
// gateways' real /gauges) and reads each tick's duration off its histogram: the sum's
// step at each count step.
func measureTicks(ctx context.Context, b *testing.B, c *testcluster.Cluster, ticks int) []time.Duration {
	s, err := scaler.New(scaler.Config{Nomad: c.Nomad, Consul: c.Consul, AdminAddr: "127.0.0.1:0", Logger: zap.NewNop(), ID: "scale-bench"})
	if err != nil {
		b.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(sctx) }()
	defer func() { stop(); <-done }()
	var out []time.Duration
	lastN, lastSum := -1, 0.0
	deadline := time.Now().Add(time.Duration(ticks+10) * 3 * time.Second)
	for len(out) < ticks && time.Now().Before(deadline) && ctx.Err() == nil {
		n, sum, err := scrapeTicks("http://" + s.AdminAddr() + "/metrics")
		if err == nil {
			if lastN >= 0 && n == lastN+1 {
				out = append(out, time.Duration((sum-lastSum)*float64(time.Second)))
			}
			lastN, lastSum = n, sum
		}
		time.Sleep(50 * time.Millisecond)
	}
	return out
}

func scrapeTicks(url string) (int, float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	n, sum := -1, 0.0
	for line := range strings.Lines(string(body)) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "rouse_scaler_tick_duration_seconds_count":
			v, _ := strconv.Atoi(f[1])
			n = v
		case "rouse_scaler_tick_duration_seconds_sum":
			sum, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if n < 0 {
		return 0, 0, fmt.Errorf("no tick histogram")
	}
	return n, sum, nil
}

// bulk is the second round's load: records written through internal/store, as apply
// writes them (a service record with its HCL spec and route, and a revision config).
type bulk struct {
	services int
	took     time.Duration
}

func writeRecords(ctx context.Context, b *testing.B, c *testcluster.Cluster, from, to int) bulk {
	st := store.New(c.Consul)
	start := time.Now()
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= to {
					return
				}
				name := svcName(i)
				rev := name + "-00001"
				cfg := revmeta.Defaults("default", name, rev)
				if err := st.PutRevision(ctx, cfg); err != nil {
					failed.Store(err)
					return
				}
				spec := fmt.Sprintf("service %q {\n  namespace = \"default\"\n  driver    = \"raw_exec\"\n  command   = \"/usr/local/bin/hello\"\n  resources {\n    cpu    = 20\n    memory = 16\n  }\n  readiness { path = \"/healthz\" }\n  autoscaling {\n    min     = 0\n    initial = 0\n    max     = 2\n  }\n}\n", name)
				_, err := st.UpdateService(ctx, "default", name, func(*store.Service) (*store.Service, error) {
					return &store.Service{Generation: 1, Latest: rev, LatestReady: rev, SpecHash: "bulk", Spec: spec,
						Traffic: []store.TrafficTarget{{Latest: true, Percent: 100}}, Route: []store.RouteTarget{{Revision: rev, Percent: 100}},
						UpdatedAt: time.Now().UTC()}, nil
				})
				if err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return bulk{services: to - from, took: time.Since(start)}
}

func purgeJobs(c *testcluster.Cluster, names []string) {
	ch := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range ch {
				_, _, _ = c.Nomad.Jobs().Deregister(n+"-00001", true, nil)
			}
		}()
	}
	for _, n := range names {
		ch <- n
	}
	close(ch)
	wg.Wait()
}

// report is everything measured, printed as markdown tables.
type report struct {
	p         params
	start     time.Time
	applies   applyResult
	rounds    []round
	builds    []build
	tick      []time.Duration
	bulk      bulk
	firstLoad time.Duration
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

func kib(f float64) string { return strconv.FormatFloat(f/1024, 'f', 1, 64) }

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## rouse scale run, %s, %d CPUs, %s, took %s\n\n", r.start.UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(), time.Since(r.start).Round(time.Second))
	a := r.applies
	fmt.Fprintf(w, "### a. `rouse apply` (CLI), services at zero (initial = 0), %d gateways following, %d at a time\n\n", r.p.gateways, r.p.parallel)
	fmt.Fprintf(w, "| applies | failed | wall | first 100 p50 / p99 ms | last 100 p50 / p99 ms |\n|---:|---:|---:|---:|---:|\n")
	head, tail := a.lat[:min(100, len(a.lat))], a.lat[max(0, len(a.lat)-100):]
	fmt.Fprintf(w, "| %d of %d | %d | %s | %s / %s | %s / %s |\n\n", a.done, r.p.services, a.failed, a.took.Round(time.Second),
		ms(pct(head, 0.5)), ms(pct(head, 0.99)), ms(pct(tail, 0.5)), ms(pct(tail, 0.99)))
	if a.lastErr != "" {
		fmt.Fprintf(w, "last failure: %s\n\n", a.lastErr)
	}
	fmt.Fprintf(w, "### b, c. route change → every gateway (%d changes per row)\n\n", r.p.changes)
	fmt.Fprintf(w, "| services | when | gateways | first gw p50 ms | all gws p50 / p99 ms | KV reads per change per gw | KV bytes per change per gw (KiB, decoded) | wire in / out per change per gw (KiB) | CPU per change (this process) |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, rd := range r.rounds {
		fmt.Fprintf(w, "| %d | %s | %d | %s | %s / %s | %.1f | %s | %s / %s | %s ms |\n", rd.services, rd.when, rd.gateways, ms(pct(rd.first, 0.5)),
			ms(pct(rd.prop, 0.5)), ms(pct(rd.prop, 0.99)), rd.kvReqs, kib(rd.kvBody), kib(rd.wireIn), kib(rd.wireOut), ms(rd.cpuPerChange))
	}
	fmt.Fprintf(w, "\n### c. route table from a snapshot\n\n| services | KV listing (keys + values) KiB | decode ms | build p50 ms (5) | table heap per service B | snapshot heap per service B |\n|---:|---:|---:|---:|---:|---:|\n")
	for _, bd := range r.builds {
		fmt.Fprintf(w, "| %d | %s | %s | %s | %.0f | %.0f |\n", bd.services, kib(float64(bd.listBytes)), ms(bd.decode), ms(pct(bd.build, 0.5)), bd.heapPerSvc, bd.heapSnapshot)
	}
	if r.bulk.services > 0 {
		fmt.Fprintf(w, "\n%d more services written through internal/store (8 writers) in %s; fresh gateways served all %d in %s.\n", r.bulk.services, r.bulk.took.Round(time.Millisecond), r.p.big, r.firstLoad.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\n### d. real scaler tick, %d revisions, %d gateways\n\n| ticks | p50 ms | max ms |\n|---:|---:|---:|\n| %d | %s | %s |\n\n", a.done, r.p.gateways, len(r.tick), ms(pct(r.tick, 0.5)), ms(pct(r.tick, 1)))
}

// processCPU is this process's user+system CPU so far.
func processCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// compactJournal removes every journal entry, as writers' own compaction has a horizon
// after a burst: what a change costs in steady state.
func compactJournal(ctx context.Context, b *testing.B, c *testcluster.Cluster) {
	if err := store.NewWith(c.Consul, store.Options{JournalHorizon: time.Nanosecond}).CompactJournal(ctx); err != nil {
		b.Fatal(err)
	}
}
