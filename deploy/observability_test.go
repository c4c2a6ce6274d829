// Package deploy holds what operators load next to rouse — Prometheus rules and
// configuration (prometheus/), a Grafana dashboard (grafana/) — and its tests prove them:
// promtool checks and unit-tests the rules, the dashboard names only metrics rouse exports
// or rules record, and a real Prometheus scrapes a real gateway and scaler with the shipped
// configuration and rules.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/jobspec"
	"github.com/rouse-run/rouse/scaler"
)

// cluster is the cluster started by the first test that needs real agents and stopped by TestMain, so
// the file checks do not wait for it.
var cluster testcluster.Lazy

func TestMain(m *testing.M) { os.Exit(cluster.Main(m)) }

func root(t *testing.T) string {
	t.Helper()
	r, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ensurePrometheus installs Debian's prometheus (with promtool) with the project's script
// when it is missing.
func ensurePrometheus(t *testing.T) {
	t.Helper()
	out, err := exec.Command(filepath.Join(root(t), "tools", "debian.sh"), "prometheus").CombinedOutput()
	if err != nil {
		t.Fatalf("tools/debian.sh prometheus: %v\n%s", err, out)
	}
}

// TestPromtool: the rules pass `promtool check rules` and their unit tests
// (prometheus/rouse-rules_test.yml: every alert fires on the series it is for, and not on
// the near misses). (prometheus.yml uses consul_sd_configs, which Debian's build of
// Prometheus leaves out; the live test checks the file-based configuration it generates.)
func TestPromtool(t *testing.T) {
	ensurePrometheus(t)
	dir := filepath.Join(root(t), "deploy", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "rouse-rules.yml"},
		{"test", "rules", "rouse-rules_test.yml"},
	} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// knownNames are the series names rouse can export — read from the gateway's and the
// scaler's metric definitions, histograms with their _bucket, _sum and _count — and the
// names the rules record.
func knownNames(t *testing.T) (exported, recorded map[string]bool) {
	t.Helper()
	exported, recorded = map[string]bool{}, map[string]bool{}
	// A name is a literal ("rouse_scaler_leader") or Namespace/Subsystem/Name options.
	name := regexp.MustCompile(`"(rouse_[a-z0-9_]+)"|Namespace:\s*"(\w+)",\s*Subsystem:\s*"(\w+)",\s*Name:\s*"(\w+)"`)
	for _, f := range []string{"gateway/metrics.go", "scaler/metrics.go"} {
		b, err := os.ReadFile(filepath.Join(root(t), f))
		if err != nil {
			t.Fatal(err)
		}
		// Each chunk after "HistogramOpts{" starts with a histogram's options: its first
		// name is a histogram's.
		for i, chunk := range strings.Split(string(b), "HistogramOpts{") {
			for j, m := range name.FindAllStringSubmatch(chunk, -1) {
				n := m[1]
				if n == "" {
					n = m[2] + "_" + m[3] + "_" + m[4]
				}
				exported[n] = true
				if i > 0 && j == 0 {
					for _, s := range []string{"_bucket", "_sum", "_count"} {
						exported[n+s] = true
					}
				}
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(root(t), "deploy", "prometheus", "rouse-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- record:\s*(\S+)`).FindAllStringSubmatch(string(b), -1) {
		recorded[m[1]] = true
	}
	if len(exported) < 30 || len(recorded) < 10 {
		t.Fatalf("read %d exported and %d recorded names: the metric definitions moved?", len(exported), len(recorded))
	}
	return exported, recorded
}

// seriesNames are the rouse series an expression names.
func seriesNames(expr string) []string {
	return regexp.MustCompile(`\brouse[_:][a-zA-Z0-9_:]*`).FindAllString(expr, -1)
}

// dashboardExprs are every query of the dashboard, by panel title (and the variables').
func dashboardExprs(t *testing.T) (exprs map[string][]string, panels []map[string]any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), "deploy", "grafana", "rouse.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string           `json:"title"`
		UID        string           `json:"uid"`
		Panels     []map[string]any `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("deploy/grafana/rouse.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q uid %q", d.Title, d.UID)
	}
	exprs = map[string][]string{}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			exprs["variable "+v.Name] = append(exprs["variable "+v.Name], fmt.Sprint(q["query"]))
		}
	}
	var walk func([]map[string]any)
	walk = func(ps []map[string]any) {
		for _, p := range ps {
			if p["type"] == "row" {
				if sub, ok := p["panels"].([]any); ok {
					var subs []map[string]any
					for _, s := range sub {
						subs = append(subs, s.(map[string]any))
					}
					walk(subs)
				}
				continue
			}
			panels = append(panels, p)
			title := fmt.Sprint(p["title"])
			targets, _ := p["targets"].([]any)
			for _, tg := range targets {
				if e, ok := tg.(map[string]any)["expr"].(string); ok {
					exprs[title] = append(exprs[title], e)
				}
			}
		}
	}
	walk(d.Panels)
	return exprs, panels
}

// TestDashboard: every panel of deploy/grafana/rouse.json has a title, a description and a
// query, and every series its queries name is one rouse exports or a rule records.
func TestDashboard(t *testing.T) {
	exported, recorded := knownNames(t)
	exprs, panels := dashboardExprs(t)
	if len(panels) < 15 {
		t.Errorf("%d panels", len(panels))
	}
	for _, p := range panels {
		title := fmt.Sprint(p["title"])
		if p["title"] == nil || p["description"] == nil || len(exprs[title]) == 0 {
			t.Errorf("panel %q: want a title, a description and at least one query", title)
		}
	}
	for title, es := range exprs {
		for _, e := range es {
			names := seriesNames(e)
			if len(names) == 0 {
				t.Errorf("%s: %q names no rouse series", title, e)
			}
			for _, n := range names {
				if !exported[n] && !recorded[n] {
					t.Errorf("%s: %q names %s, which neither the gateway nor the scaler exports nor a rule records", title, e, n)
				}
			}
		}
	}
	// The rules themselves name only what exists.
	b, err := os.ReadFile(filepath.Join(root(t), "deploy", "prometheus", "rouse-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*expr:\s*(.+)$`).FindAllStringSubmatch(string(b), -1) {
		for _, n := range seriesNames(m[1]) {
			if !exported[n] && !recorded[n] {
				t.Errorf("rouse-rules.yml: %q names %s, which nothing exports or records", m[1], n)
			}
		}
	}
}

// TestPromtool... and TestPrometheusScrapesGatewayAndScaler: a real Prometheus with the
// shipped rules scrapes a real gateway and scaler — found in Consul as the CLI finds them
// (control.Gateways, control.Scalers), written as a file_sd target file with the job and
// instance labels prometheus.yml's relabelling gives, 1 s intervals — while a service takes
// a known number of requests. Its API then reports exactly that number for
// the service, a leading scaler, the revision's desired instances, every rule healthy and
// the request-rate recording rule above zero; every rouse series it ingested is one the
// dashboard test knows, and every dashboard query runs.
func TestPrometheusScrapesGatewayAndScaler(t *testing.T) {
	ensurePrometheus(t)
	c := cluster.Get(t)
	bin, err := c.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	logCfg := zap.NewProductionConfig()
	logCfg.OutputPaths = []string{filepath.Join(t.TempDir(), "rouse.log")}
	logger, err := logCfg.Build()
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{PublicAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Domain: "localhost",
		Consul: c.Consul, Logger: logger.Named("gateway"), Register: true, ID: "gw-prom"})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := scaler.New(scaler.Config{Nomad: c.Nomad, Consul: c.Consul, Logger: logger.Named("scaler"), AdminAddr: "127.0.0.1:0", ID: "sc-prom"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var daemons sync.WaitGroup
	for _, run := range []func(context.Context) error{gw.Run, sc.Run} {
		daemons.Add(1)
		go func() {
			defer daemons.Done()
			if err := run(ctx); err != nil {
				t.Errorf("daemon: %v", err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); daemons.Wait(); _ = logger.Sync() }) // the cluster's Stop purges the job
	poll.Until(t, 30*time.Second, "the scaler leading", poll.True(sc.IsLeader))

	ctl := control.New(control.Config{Nomad: c.Nomad, Consul: c.Consul, NomadAddr: c.NomadAddr, ConsulAddr: c.ConsulAddr, Domain: "localhost"})
	src := fmt.Sprintf("service \"obs\" {\n  namespace = \"default\"\n  driver = \"raw_exec\"\n  command = %q\n  readiness { path = \"/healthz\" }\n  autoscaling {\n    min = 1\n    max = 1\n  }\n}\n", bin)
	spec, diags := jobspec.Parse(map[string][]byte{"obs.hcl": []byte(src)}, nil)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	res, err := ctl.Apply(ctx, control.ApplyOptions{Spec: spec, Source: src, Keep: control.DefaultKeep})
	if err != nil {
		t.Fatal(err)
	}

	var targets []fileTarget
	poll.Until(t, 30*time.Second, "the gateway and the scaler registered in Consul", func() error {
		targets = targets[:0]
		for job, list := range map[string]func(context.Context) ([]control.Daemon, error){"rouse-gateway": ctl.Gateways, "rouse-scaler": ctl.Scalers} {
			ds, err := list(ctx)
			if err != nil {
				return err
			}
			for _, d := range ds {
				targets = append(targets, fileTarget{Targets: []string{d.AdminAddr}, Labels: map[string]string{"job": job, "instance": d.ID}})
			}
		}
		if len(targets) != 2 {
			return fmt.Errorf("%d registered", len(targets))
		}
		return nil
	})
	prom := startPrometheus(t, targets)
	// Both daemons discovered and scraped before the traffic, so the counter's rise is seen.
	poll.Until(t, 60*time.Second, "Prometheus scraping the gateway and the scaler", func() error {
		v, err := prom.query(`count(up{job=~"rouse-gateway|rouse-scaler"} == 1)`)
		if err != nil || v != 2 {
			return fmt.Errorf("%v targets up (%v)", v, err)
		}
		return nil
	})

	// One request first: the gateway's counter for a code starts at its first request, so
	// the rise to the rest is what Prometheus sees as a rate.
	const sent = 137
	client := loadgen.Client(gw.PublicAddr(), 8, 10*time.Second)
	send := func(n int) {
		for i := range n {
			resp, err := client.Get("http://obs.default.localhost/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
		}
	}
	counted := func(want float64) {
		poll.Until(t, 30*time.Second, fmt.Sprintf("Prometheus counting %g requests of obs", want), func() error {
			v, err := prom.query(`sum(rouse_gateway_requests_total{job="rouse-gateway",service="obs",code="200"})`)
			if err != nil || v != want {
				return fmt.Errorf("%v (%v)", v, err)
			}
			return nil
		})
	}
	send(1)
	counted(1)
	send(sent - 1)
	counted(sent)
	for q, want := range map[string]float64{
		`sum(rouse_scaler_leader{job="rouse-scaler",instance="rouse-scaler-sc-prom"})`:            1,
		`rouse_scaler_desired_instances{namespace="default",revision="` + res.Revision + `"}`:     1,
		`rouse_gateway_ready_instances{instance="gw-prom",service="obs"}`:                         1,
		`sum(rouse_gateway_request_duration_seconds_count{service="obs"})`:                        sent,
		`count(rouse:gateway_requests:rate1m{service="obs",revision="` + res.Revision + `"} > 0)`: 1,
	} {
		poll.Until(t, 30*time.Second, q+" = "+strconv.FormatFloat(want, 'g', -1, 64), func() error {
			v, err := prom.query(q)
			if err != nil || v != want {
				return fmt.Errorf("%v (%v)", v, err)
			}
			return nil
		})
	}

	// Every rule loaded and evaluated without error.
	var rules struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name, Health, LastError string
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := prom.api("/api/v1/rules", nil, &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("rule %s/%s: health %q %s", g.Name, r.Name, r.Health, r.LastError)
			}
		}
	}
	if n < 20 {
		t.Errorf("Prometheus loaded %d rules", n)
	}

	// What it ingested is what the dashboard test takes rouse to export.
	exported, recorded := knownNames(t)
	var names struct{ Data []string }
	if err := prom.api("/api/v1/label/__name__/values", nil, &names); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, n := range names.Data {
		if strings.HasPrefix(n, "rouse_") {
			seen = append(seen, n)
			if !exported[n] {
				t.Errorf("Prometheus ingested %s, which knownNames does not know: read gateway/metrics.go and scaler/metrics.go again", n)
			}
		}
	}
	if len(seen) < 15 {
		t.Errorf("only %d rouse series ingested: %v", len(seen), seen)
	}
	_ = recorded

	// Every dashboard query runs (its variables set to match everything).
	vars := strings.NewReplacer("$namespace", ".*", "$service", ".*", "$__rate_interval", "1m")
	exprs, _ := dashboardExprs(t)
	titles := make([]string, 0, len(exprs))
	for k := range exprs {
		titles = append(titles, k)
	}
	sort.Strings(titles)
	for _, title := range titles {
		for _, e := range exprs[title] {
			if strings.HasPrefix(e, "label_values(") {
				continue // Grafana's, not PromQL
			}
			var out struct{ Status, Error string }
			if err := prom.api("/api/v1/query", url.Values{"query": {vars.Replace(e)}}, &out); err != nil || out.Status != "success" {
				t.Errorf("dashboard %s: %q: %v %s", title, e, err, out.Error)
			}
		}
	}
}

// prometheus is a running Prometheus.
type prometheus struct{ addr string }

// fileTarget is one entry of a Prometheus file_sd target file.
type fileTarget struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// startPrometheus runs Prometheus on a free port with the shipped rules and a file_sd job
// of targets, in a process group of its own that the test's cleanup ends.
func startPrometheus(t *testing.T, targets []fileTarget) *prometheus {
	t.Helper()
	dir := t.TempDir()
	sd, _ := json.Marshal(targets)
	if err := os.WriteFile(filepath.Join(dir, "targets.json"), sd, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: rouse
    file_sd_configs:
      - files: [%s]
`, filepath.Join(root(t), "deploy", "prometheus", "rouse-rules.yml"), filepath.Join(dir, "targets.json"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	ports, err := agents.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	p := &prometheus{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
	var log bytes.Buffer
	cmd := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	poll.Until(t, 30*time.Second, "Prometheus ready", func() error {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", log.String())
		default:
		}
		resp, err := http.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%d", resp.StatusCode)
		}
		return nil
	})
	return p
}

// api GETs path with the query and decodes the JSON answer into out.
func (p *prometheus) api(path string, q url.Values, out any) error {
	u := "http://" + p.addr + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// query is an instant query's single value (an error unless the answer is one sample).
func (p *prometheus) query(q string) (float64, error) {
	var out struct {
		Status, Error string
		Data          struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {q}}, &out); err != nil {
		return 0, err
	}
	if out.Status != "success" {
		return 0, fmt.Errorf("query %s: %s", q, out.Error)
	}
	if len(out.Data.Result) != 1 {
		return 0, fmt.Errorf("query %s: %d samples", q, len(out.Data.Result))
	}
	s, _ := out.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}
