package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/jobspec"
)

// spec is an inline service spec running one of the example apps as w runs it. Timers are
// short so that idle → zero takes seconds: a 6 s stable window (the shortest allowed) and
// a 3 s grace.
func spec(w workload, name, app, body, autoscaling string) string {
	return fmt.Sprintf(`
variable "bin" {
  type = string
}
variable "target" {
  type    = string
  default = "e2e"
}
service %q {
  %s
  env = { TARGET = var.target }
%s
  resources {
    cpu    = 50
    memory = 32
  }
  readiness { path = "/healthz" }
  autoscaling {
    window              = "6s"
    scale_to_zero_grace = "3s"
%s
  }
}
`, name+w.suffix, w.what(app), body, autoscaling)
}

// Fresh deploy of examples/hello as written (only its timers shortened) — service.hcl runs
// the binary, image.hcl the image → the URL answers; idle past the grace → zero
// instances; the next request wakes it and says it waited.
func TestDeployIdleWake(t *testing.T) {
	eachWorkload(t, testDeployIdleWake)
}

func testDeployIdleWake(t *testing.T, w workload) {
	root, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	file, vars := "service.hcl", map[string]string{"bin": plat.apps}
	if w.name != "raw_exec" {
		file, vars = "image.hcl", map[string]string{"image": plat.images["hello"]}
	}
	s, files, diags := jobspec.ParseFiles([]string{filepath.Join(root, "examples", "hello", file)}, vars)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	s.Autoscaling.Window, s.Autoscaling.ScaleToZeroGrace = 6*time.Second, 3*time.Second
	var src string
	for _, f := range files {
		src = string(f.Bytes)
	}
	res := plat.applySpec(t, s, src)
	if res.URL != "http://hello.default.localhost" {
		t.Errorf("URL %q, want http://hello.default.localhost", res.URL)
	}

	// The first answer may come a few ms after Apply returns: see waitServing.
	if took := plat.waitServing(t, res.URL, res.Revision); took > 0 {
		t.Logf("first 200 through the gateway %s after Apply returned", took.Round(time.Millisecond))
	}
	r := plat.mustGet(t, res.URL)
	if r.code != http.StatusOK || r.body != "Hello rouse!\n" || r.revision != res.Revision {
		t.Fatalf("fresh deploy answered %d %q from %q, want 200 \"Hello rouse!\" from %s", r.code, r.body, r.revision, res.Revision)
	}
	if r.cold != "" {
		t.Errorf("a request to a running revision carries %s: %s", "X-Rouse-Cold-Start", r.cold)
	}

	idle := poll.Until(t, 45*time.Second, "idle revision scaled to zero", func() error { return plat.atZero(res.Revision, true) })
	t.Logf("idle → zero instances (allocation exited) in %s", idle.Round(100*time.Millisecond))

	r = plat.mustGet(t, res.URL)
	if r.code != http.StatusOK || r.body != "Hello rouse!\n" {
		t.Fatalf("wake from zero answered %d %q", r.code, r.body)
	}
	wait, err := time.ParseDuration(r.cold)
	if err != nil {
		t.Fatalf("the response after zero has cold-start header %q (%v), want a duration", r.cold, err)
	}
	t.Logf("wake from zero: answered in %s, the gateway held it %s", r.took.Round(time.Millisecond), wait)
	if d, _, _ := plat.instances(res.Revision); d < 1 {
		t.Errorf("after the wake Nomad's count is %d", d)
	}
}

// Cold start distribution: 20 scale-from-zero cycles, request in → response out. Four
// services take turns so that one wakes while the others idle down to zero; only one
// request is in flight at a time, so the numbers are those of a lone cold start.
func TestColdStartDistribution(t *testing.T) {
	eachWorkload(t, testColdStartDistribution)
	t.Run("docker-host", func(t *testing.T) { testColdStartDistribution(t, plat.hostImage()) })
}

func testColdStartDistribution(t *testing.T, w workload) {
	const cycles, services = 20, 4
	var urls, revs []string
	for i := 0; i < services; i++ {
		res := plat.apply(t, spec(w, fmt.Sprintf("cold%d", i), "hello", "", ""), nil, nil)
		urls, revs = append(urls, res.URL), append(revs, res.Revision)
	}
	var took, held []time.Duration
	var phases [3][]time.Duration // placed, started, answered: see wakePhases
	for c := 0; c < cycles; c++ {
		i := c % services
		poll.Until(t, 45*time.Second, revs[i]+" at zero", func() error { return plat.atZero(revs[i], false) })
		sent := time.Now()
		r := plat.mustGet(t, urls[i])
		if r.code != http.StatusOK {
			t.Fatalf("cycle %d: %s answered %d %q", c, urls[i], r.code, r.body)
		}
		w, err := time.ParseDuration(r.cold)
		if err != nil {
			t.Fatalf("cycle %d: cold-start header %q: %v", c, r.cold, err)
		}
		took, held = append(took, r.took), append(held, w)
		ph, err := plat.wakePhases(t, revs[i], sent, sent.Add(r.took))
		if err != nil {
			t.Fatalf("cycle %d: %v", c, err)
		}
		for k := range ph {
			phases[k] = append(phases[k], ph[k])
		}
		t.Logf("cycle %2d %s: %s (held %s; placed +%s, started +%s, answered +%s)", c, revs[i], r.took.Round(time.Millisecond), w,
			ph[0].Round(time.Millisecond), ph[1].Round(time.Millisecond), ph[2].Round(time.Millisecond))
	}
	p50, p99 := percentiles(took)
	h50, h99 := percentiles(held)
	var med [3]time.Duration
	for k := range phases {
		med[k], _ = percentiles(phases[k])
	}
	target := coldStart[w.name]
	line := fmt.Sprintf("%s cold start over %d scale-from-zero cycles, request in → response out: p50 %s, p99 %s (gateway hold p50 %s, p99 %s; medians: request → placed %s, placed → task started %s, started → answered %s); target p50 ≤ %s, p99 ≤ %s",
		w.name, cycles, p50.Round(time.Millisecond), p99.Round(time.Millisecond), h50, h99,
		med[0].Round(time.Millisecond), med[1].Round(time.Millisecond), med[2].Round(time.Millisecond), target.p50, target.p99)
	t.Log(line)
	fmt.Println("e2e: " + line)
	// The README's headline numbers (and docs/benchmarks.md) state these targets for this
	// very test, so it holds them: with 20 cycles the nearest-rank p99 is the slowest one.
	// They assume the machine to itself (on 2026-12-01: p50 128 ms, p99 165 ms); with
	// several test runs at once on its 2 cores (load average 15) one run measured p99 2.1 s.
	if p50 > target.p50 {
		t.Errorf("%s cold start p50 %s is above the documented target %s", w.name, p50.Round(time.Millisecond), target.p50)
	}
	if p99 > target.p99 {
		t.Errorf("%s cold start p99 %s is above the documented target %s", w.name, p99.Round(time.Millisecond), target.p99)
	}
}

// The cold-start targets README.md's "Headline numbers" and docs/benchmarks.md state for
// TestColdStartDistribution, by workload.
var coldStart = map[string]struct{ p50, p99 time.Duration }{
	"raw_exec":    {250 * time.Millisecond, 500 * time.Millisecond},
	"docker":      {600 * time.Millisecond, time.Second},
	"docker-host": {350 * time.Millisecond, 700 * time.Millisecond},
}

// Burst: 200 requests at once against a revision at zero whose instances take at most 10
// at a time → every one answers 2xx (held while it wakes, then queued for slots).
func TestBurstFromZero(t *testing.T) {
	eachWorkload(t, testBurstFromZero)
}

func testBurstFromZero(t *testing.T, w workload) {
	res := plat.apply(t, spec(w, "burst", "autoscale", "  concurrency = 10", `    initial = 0
    max     = 10`), nil, nil)
	poll.Until(t, 45*time.Second, "burst revision at zero", func() error { return plat.atZero(res.Revision, false) })

	const n = 200
	url := res.URL + "/?sleep=50"
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
		errs  []string
		cold  int
		lat   []time.Duration
	)
	startGun := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGun
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r, err := plat.get(ctx, url)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			codes[r.code]++
			lat = append(lat, r.took)
			if r.cold != "" {
				cold++
			}
		}()
	}
	start := time.Now()
	close(startGun)
	wg.Wait()
	all := time.Since(start)
	p50, p99 := percentiles(lat)
	desired, _, _ := plat.instances(res.Revision)
	line := fmt.Sprintf("%s burst of %d concurrent requests at zero (concurrency 10/instance, ?sleep=50): %v in %s, %d held for the cold start, latency p50 %s p99 %s, Nomad count after %d",
		w.name, n, codes, all.Round(time.Millisecond), cold, p50.Round(time.Millisecond), p99.Round(time.Millisecond), desired)
	t.Log(line)
	fmt.Println("e2e: " + line)
	if len(errs) > 0 {
		t.Errorf("%d requests got no answer: %v", len(errs), errs[:min(5, len(errs))])
	}
	if codes[http.StatusOK] != n {
		t.Errorf("want %d × 200, got %v", n, codes)
	}
	if cold == 0 {
		t.Errorf("no response carried the cold-start header")
	}
}

// Rolling update under steady load: applying a changed env creates a new revision, traffic
// moves 100 % to it, not one request fails, and the old revision drains and scales to zero.
func TestRollingUpdate(t *testing.T) {
	eachWorkload(t, testRollingUpdate)
}

func testRollingUpdate(t *testing.T, w workload) {
	src := spec(w, "rolling", "hello", "", "")
	v1 := plat.apply(t, src, map[string]string{"target": "v1"}, nil)
	plat.waitServing(t, v1.URL, v1.Revision)
	load := plat.startLoad(v1.URL, 50)
	defer load.stop()
	poll.Until(t, 10*time.Second, "v1 answers under load", func() error {
		if revs, _ := load.answered(); revs[v1.Revision] < 25 {
			return fmt.Errorf("answers by revision %v", revs)
		}
		return nil
	})

	v2 := plat.apply(t, src, map[string]string{"target": "v2"}, nil)
	routed := time.Now()
	if v2.Revision == v1.Revision || v2.Outcome != control.OutcomeCreated {
		t.Fatalf("changed env: outcome %s revision %s (old %s), want a new revision", v2.Outcome, v2.Revision, v1.Revision)
	}
	poll.Until(t, 10*time.Second, "v2 answers", func() error {
		if revs, _ := load.answered(); revs[v2.Revision] < 25 {
			return fmt.Errorf("answers by revision %v", revs)
		}
		return nil
	})
	drained := poll.Until(t, 60*time.Second, "old revision drained to zero", func() error {
		if err := plat.atZero(v1.Revision, true); err != nil {
			return err
		}
		if es, _, err := plat.c.Consul.Health().Service(v1.Revision, "", false, nil); err != nil || len(es) > 0 {
			return fmt.Errorf("consul still lists %d instance(s) of %s (%v)", len(es), v1.Revision, err)
		}
		return nil
	})
	time.Sleep(time.Second) // keep the load on past the old instance's exit
	load.stop()

	revs, last := load.answered()
	t.Logf("answers by revision %v; old revision at zero %s after the route moved", revs, drained.Round(100*time.Millisecond))
	load.mustBeClean(t, "rolling update")
	// The gateway follows the route at once: nothing from v1 after the apply returned,
	// except requests already on their way.
	if l := last[v1.Revision]; l.After(routed.Add(time.Second)) {
		t.Errorf("v1 still answered %s after traffic moved to v2", l.Sub(routed))
	}
	for rev := range revs {
		if rev != v1.Revision && rev != v2.Revision {
			t.Errorf("answer from unexpected revision %q", rev)
		}
	}
}

// Scale-down under load: a revision started at 4 instances with light steady load is
// scaled down to 1 by the scaler; the instances leave while requests flow, and none fails.
func TestScaleDownUnderLoad(t *testing.T) {
	eachWorkload(t, testScaleDownUnderLoad)
}

func testScaleDownUnderLoad(t *testing.T, w workload) {
	res := plat.apply(t, spec(w, "shrink", "hello", "", `    initial = 4
    max     = 4`), nil, nil)
	plat.waitServing(t, res.URL, res.Revision)
	load := plat.startLoad(res.URL, 50)
	defer load.stop()
	maxReady := 0
	poll.Until(t, 20*time.Second, "4 instances ready", func() error {
		g, err := plat.gauge(res.Revision)
		maxReady = max(maxReady, int(g.Ready))
		if g.Ready != 4 {
			return fmt.Errorf("gateway ready %d (%v)", g.Ready, err)
		}
		return nil
	})
	took := poll.Until(t, 60*time.Second, "scaled down to one running instance", func() error {
		d, r, err := plat.instances(res.Revision)
		g, _ := plat.gauge(res.Revision)
		if err != nil || d != 1 || r != 1 || g.Ready != 1 {
			return fmt.Errorf("nomad count %d running %d, gateway ready %d (%v)", d, r, g.Ready, err)
		}
		return nil
	})
	time.Sleep(time.Second)
	load.stop()
	t.Logf("4 → 1 instances (the last removed one exited) in %s under 50 rps", took.Round(100*time.Millisecond))
	load.mustBeClean(t, "scale-down")
}

// Split and tags, through the CLI as the traffic-split README does it: blue, then green at
// 0 %, then 50/50 (within ±3 % over 2 000 requests) with each tag URL reaching its
// revision, then 100 % green.
func TestTrafficSplitAndTags(t *testing.T) {
	rouse, err := plat.c.GoBuild("./cmd/rouse")
	if err != nil {
		t.Fatal(err)
	}
	root, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, rouse, args...)
		cmd.Dir = root
		cmd.Env = append(append(os.Environ(), plat.c.Env()...), "ROUSE_DOMAIN="+domain)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("rouse %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("rouse %s\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	plat.deleteAtEnd(t, "default", "split")
	specFile := "examples/traffic-split/service.hcl"
	cli("apply", "-f", specFile, "-var", "bin="+plat.apps)
	cli("apply", "-f", specFile, "-var", "bin="+plat.apps, "-var", "color=green")

	const url, blueURL, greenURL = "http://split.default.localhost/", "http://blue-split.default.localhost/", "http://green-split.default.localhost/"
	count := func(url string, n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		next := make(chan struct{})
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				for range next {
					r, err := plat.get(ctx, url)
					key := r.revision
					if err != nil || r.code != http.StatusOK {
						key = fmt.Sprintf("error %d %v", r.code, err)
					}
					mu.Lock()
					got[key]++
					mu.Unlock()
				}
			}()
		}
		for i := 0; i < n; i++ {
			next <- struct{}{}
		}
		close(next)
		wg.Wait()
		return got
	}

	if got := count(url, 50); got["split-blue"] != 50 {
		t.Errorf("green at 0 %%: 50 requests went %v, want all to split-blue", got)
	}
	cli("traffic", "split", "split-blue=50", "split-green=50", "--tag", "split-green=green")
	// rouse traffic returns once the gateway serves the new route: the tag URL works at
	// once, with no retry.
	if r, err := plat.get(context.Background(), greenURL); err != nil || r.revision != "split-green" {
		t.Fatalf("right after rouse traffic, %s answered %d %q from %q (%v); want split-green", greenURL, r.code, r.body, r.revision, err)
	}
	// ±3 % is 2.7 standard deviations of a fair 50/50 draw over 2 000 requests (a red run
	// in ~150 by chance alone; one came, at 53.0 %, every request on the gateway's raw path
	// of the time); over 4 000 it is 3.8.
	const n = 4000
	got := count(url, n)
	blue, green := got["split-blue"], got["split-green"]
	line := fmt.Sprintf("50/50 split over %d requests: split-blue %d (%.1f %%), split-green %d (%.1f %%)", n, blue, 100*float64(blue)/n, green, 100*float64(green)/n)
	t.Log(line)
	fmt.Println("e2e: " + line)
	if blue+green != n {
		t.Errorf("not every request reached a revision: %v", got)
	}
	if d := blue - n/2; d < -n*3/100 || d > n*3/100 {
		t.Errorf("split-blue got %d of %d, outside 50 %% ± 3 %%", blue, n)
	}
	for tagURL, rev := range map[string]string{blueURL: "split-blue", greenURL: "split-green"} {
		if got := count(tagURL, 40); got[rev] != 40 {
			t.Errorf("tag URL %s: %v, want all 40 from %s", tagURL, got, rev)
		}
	}
	r := plat.mustGet(t, greenURL)
	if r.body != "Hello green!\n" {
		t.Errorf("green answers %q", r.body)
	}

	cli("traffic", "split", "split-green=100")
	if got := count(url, 20); got["split-green"] != 20 {
		t.Errorf("right after rouse traffic split-green=100: %v, want all 20 from split-green", got)
	}
	if got := count(url, 100); got["split-green"] != 100 {
		t.Errorf("green at 100 %%: %v", got)
	}
	if got := count(blueURL, 10); got["split-blue"] != 10 {
		t.Errorf("blue tag URL after blue left the split: %v", got)
	}
	if out := cli("traffic", "split"); !strings.Contains(out, "split-green  100%") || !strings.Contains(out, strings.TrimSuffix(greenURL, "/")) {
		t.Errorf("rouse traffic split does not show green at 100 %% with its tag URL:\n%s", out)
	}
}
