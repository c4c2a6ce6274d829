// Package e2e proves rouse end to end on real agents: a Consul and a Nomad agent forked on
// loopback (internal/harness/testcluster), the gateway and the scaler running in this process as
// `rouse dev` runs them, services applied through the control plane or the built CLI, and
// real HTTP through the gateway to real app processes. Each test owns its services and
// deletes them; every wait has a deadline.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/cmd/rouse/devd"
	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/registry"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/jobspec"
	"github.com/rouse-run/rouse/scaler"
)

// plat is the platform every test of the package shares (started once in TestMain).
var plat *platform

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	c, err := testcluster.Start(testcluster.Options{Docker: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Stop() // last: purges every job, then stops the agents
	p, err := startPlatform(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	plat = p
	code := m.Run()
	p.stop()
	if code != 0 {
		c.DumpLogs(os.Stderr)
		p.dumpLog(os.Stderr)
	}
	return code
}

// platform is the cluster plus rouse's daemons and clients.
type platform struct {
	c       *testcluster.Cluster
	gw      *gateway.Gateway
	sc      *scaler.Scaler
	ctl     *control.Client
	http    *http.Client
	apps    string            // folder holding the example binaries under their own names
	images  map[string]string // example app → its image in the cluster's registry (a tag)
	logPath string
	stop    func()

	mu        sync.Mutex
	deletes   map[deleteKey]bool  // services a test has scheduled for deletion
	explained map[*testing.T]bool // tests that print the scaler's decisions if they fail
}

type deleteKey struct {
	t   *testing.T // not its name: with -count=N every run has the same one
	svc string
}

const domain = "localhost"

func startPlatform(c *testcluster.Cluster) (*platform, error) {
	p := &platform{c: c, apps: filepath.Join(c.Dir, "apps"), images: map[string]string{}, logPath: filepath.Join(c.Dir, "rouse.log"), deletes: map[deleteKey]bool{}, explained: map[*testing.T]bool{}}
	// The specs run ${bin}/hello and ${bin}/autoscale: link the built binaries under those names.
	if err := os.MkdirAll(p.apps, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"hello", "autoscale"} {
		bin, err := c.GoBuild("./examples/" + name)
		if err != nil {
			return nil, err
		}
		if err := os.Symlink(bin, filepath.Join(p.apps, name)); err != nil {
			return nil, err
		}
	}
	if err := p.pushImages(); err != nil {
		return nil, err
	}
	logger, err := devd.FileLogger(p.logPath)
	if err != nil {
		return nil, err
	}
	p.gw, err = gateway.New(gateway.Config{PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Domain: domain,
		InternalAddr: "127.0.0.1:0", // internal_test.go
		Consul:       c.Consul, Logger: logger.Named("gateway"), Register: true, ID: "e2e"})
	if err != nil {
		return nil, err
	}
	p.sc, err = scaler.New(scaler.Config{Nomad: c.Nomad, Consul: c.Consul, Logger: logger.Named("scaler"),
		AdminAddr: "127.0.0.1:0", ID: "e2e"})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"gateway": p.gw.Run, "scaler": p.sc.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: %s: %v\n", name, err)
			}
		}()
	}
	p.stop = func() {
		cancel()
		wg.Wait()
		_ = logger.Sync()
	}
	p.ctl = control.New(control.Config{Nomad: c.Nomad, Consul: c.Consul, NomadAddr: c.NomadAddr,
		ConsulAddr: c.ConsulAddr, Domain: domain})
	p.http = loadgen.Client(p.gw.PublicAddr(), 256, 30*time.Second)

	// The scaler must lead and find the gateway before a test relies on it.
	deadline := time.Now().Add(30 * time.Second)
	for !p.sc.IsLeader() || !p.gatewayRegistered() {
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("the scaler did not lead, or the gateway did not pass its Consul check, within 30s (log %s)", p.logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p, nil
}

// pushImages builds the example apps statically and pushes each as an image to the
// cluster's registry: what the docker variants of the tests run.
func (p *platform) pushImages() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg, err := p.c.Registry(ctx)
	if err != nil {
		return err
	}
	for _, name := range []string{"hello", "autoscale"} {
		bin := filepath.Join(p.c.Dir, "static", name)
		if err := registry.BuildStatic("./examples/"+name, bin); err != nil {
			return err
		}
		ref, err := reg.Push(ctx, name+":e2e", registry.Image{Binary: bin})
		if err != nil {
			return err
		}
		p.images[name] = ref.Tag
	}
	return nil
}

// workload is one way a test's service runs: the same example app as a raw_exec binary or
// as an image, so that every end-to-end behaviour is proven for both drivers.
type workload struct {
	name   string // subtest name
	suffix string // added to service names, so that variants never share one
	what   func(app string) string
}

func (p *platform) workloads() []workload {
	return []workload{
		{name: "raw_exec", what: func(app string) string { return fmt.Sprintf(`command = "${var.bin}/%s"`, app) }},
		{name: "docker", suffix: "-img", what: func(app string) string { return fmt.Sprintf("image = %q", p.images[app]) }},
	}
}

// hostImage runs the image in the node's network (network = "host"): no network
// namespace to set up, no port mapping, the fast wake docs/spec.md offers.
func (p *platform) hostImage() workload {
	return workload{name: "docker-host", suffix: "-host", what: func(app string) string {
		return fmt.Sprintf("image = %q\n  network = \"host\"", p.images[app])
	}}
}

// eachWorkload runs f as a subtest per workload.
func eachWorkload(t *testing.T, f func(t *testing.T, w workload)) {
	for _, w := range plat.workloads() {
		t.Run(w.name, func(t *testing.T) { f(t, w) })
	}
}

func (p *platform) gatewayRegistered() bool {
	es, _, err := p.c.Consul.Health().Service(scaler.DefaultGatewayService, "", true, nil)
	return err == nil && len(es) > 0
}

func (p *platform) dumpLog(w io.Writer) {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return
	}
	if len(b) > 32<<10 {
		b = b[len(b)-32<<10:]
	}
	fmt.Fprintf(w, "----- gateway + scaler log (%s), last 32 KiB -----\n%s\n", p.logPath, b)
}

// apply parses an inline spec, lets edit adjust it, applies it and deletes the service when
// the test ends.
func (p *platform) apply(t *testing.T, src string, vars map[string]string, edit func(*jobspec.Spec)) *control.ApplyResult {
	t.Helper()
	if vars == nil {
		vars = map[string]string{}
	}
	if _, ok := vars["bin"]; !ok {
		vars["bin"] = p.apps
	}
	spec, diags := jobspec.Parse(map[string][]byte{"service.hcl": []byte(src)}, vars)
	if diags.HasErrors() {
		t.Fatalf("spec: %s", diags.Error())
	}
	if edit != nil {
		edit(spec)
	}
	return p.applySpec(t, spec, src)
}

func (p *platform) applySpec(t *testing.T, spec *jobspec.Spec, src string) *control.ApplyResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Keep as the CLI does: ApplyOptions' zero Keep purges every revision without
	// traffic at once, the old one of a rolling update included.
	res, err := p.ctl.Apply(ctx, control.ApplyOptions{Spec: spec, Source: src, Keep: control.DefaultKeep})
	if err != nil {
		t.Fatalf("apply %s: %v", spec.Name, err)
	}
	t.Logf("applied %s: %s revision %s, %s", spec.Name, res.Outcome, res.Revision, res.URL)
	p.deleteAtEnd(t, spec.Namespace, spec.Name)
	p.explainFailure(t)
	return res
}

// explainFailure prints the scaler's last decisions if t fails (once per test, before its
// services are deleted): what the scaler thought is most of why a wait for a count or
// for zero ran out.
func (p *platform) explainFailure(t *testing.T) {
	p.mu.Lock()
	seen := p.explained[t]
	p.explained[t] = true
	p.mu.Unlock()
	if !seen {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("scaler decisions:\n%s", p.decisions())
			}
		})
	}
}

// deleteAtEnd deletes the service when the test ends (once, however often it is applied).
func (p *platform) deleteAtEnd(t *testing.T, ns, svc string) {
	key := deleteKey{t, ns + "/" + svc}
	p.mu.Lock()
	seen := p.deletes[key]
	p.deletes[key] = true
	p.mu.Unlock()
	if seen {
		return
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		// A test that deleted the service itself has left nothing to delete.
		var gone *control.NotFoundError
		if _, err := p.ctl.Delete(ctx, ns, svc, 40*time.Second, nil); err != nil && !errors.As(err, &gone) {
			t.Errorf("delete %s: %v", svc, err)
		}
	})
}

// response is what one request through the gateway got.
type response struct {
	code     int
	revision string // X-Revision, set by the example apps
	cold     string // the gateway's cold-start header: how long the request waited for a wake
	retry    string // Retry-After, on the gateway's own 503s
	body     string
	took     time.Duration // request in → response out, at the client
}

func (p *platform) get(ctx context.Context, url string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	start := time.Now()
	resp, err := p.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := response{code: resp.StatusCode, revision: resp.Header.Get("X-Revision"),
		cold: resp.Header.Get(gateway.ColdStartHeader), retry: resp.Header.Get("Retry-After"), body: string(b), took: time.Since(start)}
	return r, err
}

// mustGet is get that fails the test on a transport error.
func (p *platform) mustGet(t *testing.T, url string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := p.get(ctx, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return r
}

// instances is the revision's Nomad group count and running allocations (an allocation
// in its shutdown delay still runs).
func (p *platform) instances(rev string) (desired, running int, err error) {
	st, _, err := p.c.Nomad.Jobs().ScaleStatus(rev, &nomadapi.QueryOptions{})
	if err != nil {
		return 0, 0, err
	}
	tg, ok := st.TaskGroups[revmeta.Group]
	if !ok {
		return 0, 0, fmt.Errorf("job %s has no group %q", rev, revmeta.Group)
	}
	return tg.Desired, tg.Running, nil
}

// gauge is the gateway's gauge line for the revision (zero when it has none).
func (p *platform) gauge(rev string) (gauges.Revision, error) {
	resp, err := http.Get("http://" + p.gw.AdminAddr() + "/gauges")
	if err != nil {
		return gauges.Revision{}, err
	}
	defer resp.Body.Close()
	rep, err := gauges.Read(resp.Body)
	if err != nil {
		return gauges.Revision{}, err
	}
	for _, v := range rep.Revisions {
		if v.Revision == rev {
			return v, nil
		}
	}
	return gauges.Revision{}, nil
}

// atZero reports whether nothing serves rev: Nomad's count is 0 and the gateway routes to
// no instance. With stopped, the last allocation must also have exited.
func (p *platform) atZero(rev string, stopped bool) error {
	d, r, err := p.instances(rev)
	if err != nil {
		return err
	}
	g, err := p.gauge(rev)
	if err != nil {
		return err
	}
	if d == 0 && g.Ready == 0 && g.Held == 0 && (!stopped || r == 0) {
		return nil
	}
	return fmt.Errorf("nomad count %d, running %d; gateway ready %d, held %d", d, r, g.Ready, g.Held)
}

// wakePhases splits one wake of rev, from the request sent at sent to its answer at done,
// into where the time went: sent → the allocation placed (the gateway's activation, the
// scaler's Jobs.Scale, Nomad's evaluation and placement), placed → the task started (the
// driver: for docker, creating and starting the container and its network), started →
// answered (Consul registration, the gateway's probe, the app's first answer).
func (p *platform) wakePhases(t *testing.T, rev string, sent, done time.Time) ([3]time.Duration, error) {
	t.Helper()
	var ph [3]time.Duration
	stubs, _, err := p.c.Nomad.Jobs().Allocations(rev, true, &nomadapi.QueryOptions{})
	if err != nil {
		return ph, err
	}
	var newest *nomadapi.AllocationListStub
	for _, a := range stubs {
		if newest == nil || a.CreateTime > newest.CreateTime {
			newest = a
		}
	}
	if newest == nil {
		return ph, fmt.Errorf("%s has no allocation", rev)
	}
	placed := time.Unix(0, newest.CreateTime)
	// The list's task states carry no events; the allocation itself does, once the client
	// has sent its update (it batches them: the answer can come first).
	var started time.Time
	poll.Until(t, 5*time.Second, "a Started event on allocation "+newest.ID+" of "+rev, func() error {
		alloc, _, err := p.c.Nomad.Allocations().Info(newest.ID, &nomadapi.QueryOptions{})
		if err != nil {
			return err
		}
		for _, ts := range alloc.TaskStates {
			for _, ev := range ts.Events {
				if ev.Type == nomadapi.TaskStarted {
					started = time.Unix(0, ev.Time)
				}
			}
		}
		if started.IsZero() {
			return errors.New("none yet")
		}
		return nil
	})
	return [3]time.Duration{placed.Sub(sent), started.Sub(placed), done.Sub(started)}, nil
}

// decisions is the scaler's /decisions page, for failure messages.
func (p *platform) decisions() string {
	resp, err := http.Get("http://" + p.sc.AdminAddr() + "/decisions")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// percentiles returns the nearest-rank p50 and p99 of ds.
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return loadgen.Percentile(s, 50), loadgen.Percentile(s, 99)
}

// steadyLoad runs an open-model load of rps requests per second against url until stop
// is called, and returns the recorder and the revisions that answered, by count.
type steadyLoad struct {
	rec  *loadgen.Recorder
	mu   sync.Mutex
	revs map[string]int
	last map[string]time.Time // when each revision last answered
	// failures are the first non-2xx answers, with the body that says why.
	failures []string
	stop     func()
}

func (p *platform) startLoad(url string, rps float64) *steadyLoad {
	l := &steadyLoad{rec: loadgen.NewRecorder(time.Now()), revs: map[string]int{}, last: map[string]time.Time{}}
	g := &loadgen.Generator{
		Client: p.http,
		// Not the run's context: stopping the schedule must let requests in flight finish.
		NewRequest: func(context.Context) (*http.Request, error) {
			return http.NewRequest(http.MethodGet, url, nil)
		},
		MaxInFlight: 200,
		Recorder:    l.rec,
		Observe: func(resp *http.Response) {
			rev := resp.Header.Get("X-Revision")
			var failure string
			if resp.StatusCode/100 != 2 {
				// The gateway says why in the body: keep it for the failure message.
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				failure = fmt.Sprintf("%s HTTP %d from %q: %s", time.Now().Format("15:04:05.000"), resp.StatusCode, rev, strings.TrimSpace(string(b)))
			}
			l.mu.Lock()
			l.revs[rev]++
			l.last[rev] = time.Now()
			if failure != "" && len(l.failures) < 10 {
				l.failures = append(l.failures, failure)
			}
			l.mu.Unlock()
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx, loadgen.Constant(rps), time.Hour)
	}()
	// Stopping ends the schedule; requests in flight finish before stop returns.
	l.stop = sync.OnceFunc(func() { cancel(); <-done })
	return l
}

func (l *steadyLoad) answered() (map[string]int, map[string]time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	revs, last := map[string]int{}, map[string]time.Time{}
	for k, v := range l.revs {
		revs[k] = v
	}
	for k, v := range l.last {
		last[k] = v
	}
	return revs, last
}

// mustBeClean fails the test if any request of the load failed.
func (l *steadyLoad) mustBeClean(t *testing.T, what string) loadgen.Totals {
	t.Helper()
	tot := l.rec.Totals(0, -1)
	t.Logf("%s: %d requests sent, %d ok, %d errors (%v, %d without answer), %d shed; p50 %s p99 %s max %s",
		what, tot.Offered-tot.Shed, tot.OK, tot.Errors, tot.Codes, tot.Transport, tot.Shed, tot.P50, tot.P99, tot.Max)
	if tot.Failures() > 0 {
		l.mu.Lock()
		failures := strings.Join(l.failures, "\n  ")
		l.mu.Unlock()
		t.Errorf("%s: %d failed requests: %v\n  %s", what, tot.Failures(), l.rec.ErrorTexts(), failures)
	}
	if tot.OK == 0 {
		t.Errorf("%s: no request succeeded", what)
	}
	return tot
}

// waitServing waits until url answers 200 from rev through the gateway. Apply returns once
// the route is written to Consul; the gateway loads it moments later (a request in between
// gets the previous route, or 503 for a new service), so tests that count every answer
// start counting after this.
func (p *platform) waitServing(t *testing.T, url, rev string) time.Duration {
	t.Helper()
	return poll.Until(t, 5*time.Second, url+" served by "+rev, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if r, err := p.get(ctx, url); err != nil || r.code != http.StatusOK || r.revision != rev {
			return fmt.Errorf("%d %q from %q (%v)", r.code, r.body, r.revision, err)
		}
		return nil
	})
}
