package console

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/jobspec"
	"github.com/rouse-run/rouse/scaler"
)

// cluster is the cluster started by the first test that needs real agents (the pure tests do not wait
// for it) and stopped by TestMain.
var cluster testcluster.Lazy

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

// TestConsoleInBrowser: a real cluster (Consul, Nomad, the gateway and the scaler in this
// process) with three services — hello with two revisions split 30/70 and a tag, autoscale
// under load, and wake, scaled from zero by one request — and `rouse console` on it. Headless
// Chromium loads the pages, runs their script (which swaps in fresh renderings), and the
// DOM it ends with shows what the cluster says: service and revision names, traffic
// percents, tags, instance counts, the wake's cold-start wait, requests per second above
// zero under load. It takes a screenshot of the service page (into docs/console.png with
// ROUSE_UPDATE_SCREENSHOT=1).
func TestConsoleInBrowser(t *testing.T) {
	root, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ensureDebian(t, root, "chromium")
	c := cluster.Get(t)
	apps := t.TempDir()
	for _, app := range []string{"hello", "autoscale"} {
		bin, err := c.GoBuild("./examples/" + app)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(bin, filepath.Join(apps, app)); err != nil {
			t.Fatal(err)
		}
	}
	logCfg := zap.NewProductionConfig()
	logCfg.OutputPaths = []string{filepath.Join(t.TempDir(), "rouse.log")}
	logger, err := logCfg.Build()
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Domain: "localhost",
		Consul: c.Consul, Logger: logger.Named("gateway"), Register: true, ID: "gw-console"})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := scaler.New(scaler.Config{Nomad: c.Nomad, Consul: c.Consul, Logger: logger.Named("scaler"), AdminAddr: "127.0.0.1:0", ID: "sc-console"})
	if err != nil {
		t.Fatal(err)
	}
	ctl := control.New(control.Config{Nomad: c.Nomad, Consul: c.Consul, NomadAddr: c.NomadAddr, ConsulAddr: c.ConsulAddr, Domain: "localhost"})
	cons, err := New(Config{Control: ctl, Namespace: "default", Listen: "127.0.0.1:0", Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var daemons sync.WaitGroup
	for _, run := range []func(context.Context) error{gw.Run, sc.Run, cons.Run} {
		daemons.Add(1)
		go func() {
			defer daemons.Done()
			if err := run(ctx); err != nil {
				t.Errorf("daemon: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		daemons.Wait()
		_ = logger.Sync() // the cluster's Stop (TestMain) purges every job
	})
	poll.Until(t, 30*time.Second, "the scaler leading", poll.True(sc.IsLeader))

	apply := func(name, body string) *control.ApplyResult {
		t.Helper()
		src := fmt.Sprintf("service %q {\n  namespace = \"default\"\n  driver = \"raw_exec\"\n%s\n  readiness { path = \"/healthz\" }\n}\n", name, body)
		spec, diags := jobspec.Parse(map[string][]byte{name + ".hcl": []byte(src)}, nil)
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		res, err := ctl.Apply(ctx, control.ApplyOptions{Spec: spec, Source: src, Keep: control.DefaultKeep})
		if err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
		return res
	}
	fixed := "  autoscaling {\n    min = 1\n    max = 1\n  }"
	apply("hello", fmt.Sprintf("  command = %q\n  env = { TARGET = \"one\" }\n%s", filepath.Join(apps, "hello"), fixed))
	apply("hello", fmt.Sprintf("  command = %q\n  env = { TARGET = \"two\" }\n%s", filepath.Join(apps, "hello"), fixed))
	if _, err := ctl.SetTraffic(ctx, "default", "hello", control.TrafficUpdate{
		Split: []store.TrafficTarget{{Revision: "hello-00001", Percent: 30}, {Revision: "hello-00002", Percent: 70}},
		Tags:  []store.TrafficTarget{{Revision: "hello-00001", Tag: "blue"}},
	}); err != nil {
		t.Fatal(err)
	}
	apply("autoscale", fmt.Sprintf("  command = %q\n  autoscaling {\n    target = 10\n    min = 1\n    max = 1\n  }", filepath.Join(apps, "autoscale")))
	apply("wake", fmt.Sprintf("  command = %q\n  autoscaling {\n    min = 0\n    initial = 0\n  }", filepath.Join(apps, "hello")))

	// Load: hello at about 40 requests per second, autoscale with 4 requests of 150 ms in
	// flight; and one request that wakes "wake" from zero.
	client := loadgen.Client(gw.PublicAddr(), 64, 30*time.Second)
	var sent, failed atomic.Int64
	lctx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	loop := func(url string, pause time.Duration) {
		defer load.Done()
		for lctx.Err() == nil {
			req, _ := http.NewRequestWithContext(lctx, "GET", url, nil)
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
			select {
			case <-lctx.Done():
			case <-time.After(pause):
			}
		}
	}
	for range 4 {
		load.Add(2)
		go loop("http://hello.default.localhost/", 100*time.Millisecond)
		go loop("http://autoscale.default.localhost/?sleep=150", 0)
	}
	defer func() { stopLoad(); load.Wait() }()
	// Seen once in a few runs: the first request right after an apply at zero answered 503
	// (logged with its reason); the console test needs a wake, not that request.
	poll.Until(t, 30*time.Second, "a request that wakes wake from zero", func() error {
		resp, err := client.Get("http://wake.default.localhost/")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Rouse-Cold-Start") == "" {
			t.Logf("the wake answered %d %q, cold start %q", resp.StatusCode, body, resp.Header.Get("X-Rouse-Cold-Start"))
			return fmt.Errorf("%d", resp.StatusCode)
		}
		return nil
	})

	// Until the console has seen the load for a few samples (so the charts have lines).
	poll.Until(t, 30*time.Second, "the console's hello page showing requests per second", func() error {
		b, err := httpGet(cons.URL() + "services/default/hello?fragment=1")
		if err != nil {
			return err
		}
		if n := strings.Count(b, "<path d="); n < 8 {
			return fmt.Errorf("%d chart lines yet", n)
		}
		return nil
	})
	time.Sleep(4 * time.Second) // a few more samples: lines, not dots (a chart's wait, not a synchronisation)

	index := dumpDOM(t, cons.URL())
	if n, _ := strconv.Atoi(attr(index, `<body[^>]*data-refreshes="(\d+)"`)); n < 1 {
		t.Errorf("the script swapped in no fresh rendering (data-refreshes %d)", n)
	}
	for _, svc := range []string{"hello", "autoscale", "wake"} {
		d, err := ctl.Describe(ctx, "default", svc)
		if err != nil {
			t.Fatal(err)
		}
		row := between(index, `<tr data-service="default/`+svc+`"`, `</tr>`)
		if row == "" {
			t.Errorf("index: no row for %s", svc)
			continue
		}
		if !strings.Contains(row, `href="`+d.URL+`"`) || !strings.Contains(row, `data-field="latest-ready">`+d.LatestReady+`<`) {
			t.Errorf("index row of %s lacks URL %s or latest ready %s:\n%s", svc, d.URL, d.LatestReady, row)
		}
		for _, r := range d.Route {
			if r.Percent > 0 && !strings.Contains(row, fmt.Sprintf(`data-traffic="%s" data-percent="%d"`, r.Revision, r.Percent)) {
				t.Errorf("index row of %s lacks %s at %d%%:\n%s", svc, r.Revision, r.Percent, row)
			}
		}
		ready, desired := 0, 0
		for _, r := range d.Revisions {
			ready, desired = ready+r.Ready, desired+r.Desired
		}
		if want := fmt.Sprintf(`data-field="instances">%d/%d<`, ready, desired); !strings.Contains(row, want) {
			t.Errorf("index row of %s lacks %s:\n%s", svc, want, row)
		}
	}
	if row := between(index, `<tr data-service="default/hello"`, `</tr>`); !strings.Contains(row, `data-tag="blue" data-tag-revision="hello-00001"`) {
		t.Errorf("hello's row lacks the tag blue on hello-00001:\n%s", row)
	}
	if rps := attr(between(index, `<tr data-service="default/hello"`, `</tr>`), `data-field="rps">([0-9.]+)<`); rps == "" || rps == "0" {
		t.Errorf("hello's requests per second under load: %q", rps)
	}
	for _, want := range []string{`data-gateway="gw-console"`, `data-scaler="rouse-scaler-sc-console"`, "<b>leader</b>"} {
		if !strings.Contains(index, want) {
			t.Errorf("index lacks %s", want)
		}
	}

	hello := dumpDOM(t, cons.URL()+"services/default/hello")
	d, err := ctl.Describe(ctx, "default", "hello")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range d.Revisions {
		sec := between(hello, `<section class="revision" data-revision="`+r.Name+`"`, `</section>`)
		if sec == "" {
			t.Errorf("hello page: no section for %s", r.Name)
			continue
		}
		for _, want := range []string{fmt.Sprintf(`data-field="percent">%d%%<`, r.Percent), fmt.Sprintf(`data-field="instances">%d/%d<`, r.Ready, r.Desired),
			`data-chart="` + r.Name + `-instances"`, `data-chart="` + r.Name + `-rps"`, `data-chart="` + r.Name + `-latency"`, `data-field="decision">`} {
			if !strings.Contains(sec, want) {
				t.Errorf("hello page, %s lacks %s", r.Name, want)
			}
		}
	}
	wake := dumpDOM(t, cons.URL()+"services/default/wake")
	if cold := attr(wake, `>(\d+) waits, p50`); cold != "1" {
		t.Errorf("wake page: cold-start waits %q, want 1", cold)
	}

	png := filepath.Join(t.TempDir(), "console.png")
	chromium(t, "--window-size=1280,1500", "--screenshot="+png, cons.URL()+"services/default/hello")
	b, err := os.ReadFile(png)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("screenshot: %v (%d bytes)", err, len(b))
	}
	// The README's screenshot is refreshed on request only, so a test run leaves the work
	// tree as it was: ROUSE_UPDATE_SCREENSHOT=1 go test -run TestConsoleInBrowser ./console/
	shot := png
	if os.Getenv("ROUSE_UPDATE_SCREENSHOT") != "" {
		shot = filepath.Join(root, "docs", "console.png")
		if err := os.WriteFile(shot, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d requests sent under load (%d not 200); screenshot %s (%d KiB)", sent.Load(), failed.Load(), shot, len(b)>>10)
}

// ensureDebian installs a Debian tool with the project's script when it is missing.
func ensureDebian(t *testing.T, root string, tools ...string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(root, "tools", "debian.sh"), tools...).CombinedOutput()
	if err != nil {
		t.Fatalf("tools/debian.sh %s: %v\n%s", strings.Join(tools, " "), err, out)
	}
}

// dumpDOM loads url in headless Chromium, lets its script run for a few (virtual) seconds
// and returns the DOM it ends with.
func dumpDOM(t *testing.T, url string) string {
	t.Helper()
	return string(chromium(t, "--virtual-time-budget=3500", "--dump-dom", url))
}

// chromium runs headless Chromium in a process group of its own, and kills whatever of
// that group is left when it returns: no browser outlives the test.
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--no-default-browser-check", "--hide-scrollbars", "--mute-audio", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, "chromium", append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	return out
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// between is s from the first start to the next end after it ("" when start is absent).
func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	j := strings.Index(s[i:], end)
	if j < 0 {
		return s[i:]
	}
	return s[i : i+j]
}

// attr is the first group of re's first match in s, "" when none.
func attr(s, re string) string {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestConsoleDeniedWithoutTokens: against agents with default-deny ACLs and no tokens, as
// an operator who forgot to export them, the page says Access denied and names the
// capability and the variable, as the CLI does, and says the gateways and scalers Consul
// did not list may be hidden from the token, instead of showing an empty platform.
func TestConsoleDeniedWithoutTokens(t *testing.T) {
	c, err := testcluster.Start(testcluster.Options{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	// A gateway and a scaler registered (by a token that may), which the anonymous token
	// may not see: Consul filters them out of its answer rather than refusing it.
	for _, name := range []string{"rouse-gateway", control.ScalerService} {
		if err := c.Consul.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: name + "-acl", Name: name, Address: "127.0.0.1", Port: 1}); err != nil {
			t.Fatal(err)
		}
	}
	nomad, consul := anonymousClients(t, c)
	ctl := control.New(control.Config{Nomad: nomad, Consul: consul, NomadAddr: c.NomadAddr, ConsulAddr: c.ConsulAddr})
	cons, err := newConsole(Config{Control: ctl, Namespace: "default"}, ctl)
	if err != nil {
		t.Fatal(err)
	}
	cons.Sample(context.Background())
	_, body := get(t, cons.Handler(), "/")
	for _, want := range []string{"Access denied", "consul: permission denied: this token needs key:read on rouse/services/default/ (CONSUL_HTTP_TOKEN is not set)",
		"No gateway visible to this token", "No scaler visible to this token"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, between(body, `<section class="problems`, `</section>`))
		}
	}
}

// anonymousClients are Nomad and Consul clients of the cluster without a token.
func anonymousClients(t *testing.T, c *testcluster.Cluster) (*nomadapi.Client, *consulapi.Client) {
	t.Helper()
	ncfg := nomadapi.DefaultConfig()
	ncfg.Address, ncfg.SecretID = c.NomadAddr, ""
	nc, err := nomadapi.NewClient(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := consulapi.DefaultConfig()
	ccfg.Address, ccfg.Token = c.ConsulAddr, ""
	cc, err := consulapi.NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	return nc, cc
}
