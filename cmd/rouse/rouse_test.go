package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/store"
)

// The integration tests run the real rouse binary against real Consul and Nomad agents,
// as a user or a CI pipeline would: exit codes and output are part of what is tested.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(testcluster.Run(m, testcluster.Options{}, &cluster)) }

// bins builds rouse and the hello app once per package run.
func bins(t *testing.T) (rouseBin, helloBin string) {
	t.Helper()
	var err error
	if rouseBin, err = cluster.GoBuild("./cmd/rouse"); err != nil {
		t.Fatal(err)
	}
	if helloBin, err = cluster.GoBuild("./examples/hello"); err != nil {
		t.Fatal(err)
	}
	return rouseBin, helloBin
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// rouseEnv runs the binary with exactly env (plus PATH and HOME) and a bounded time.
func rouseEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	bin, _ := bins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	t.Logf("rouse %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run rouse %v: %v", args, err)
	}
	return r
}

func rouse(t *testing.T, args ...string) result {
	t.Helper()
	return rouseEnv(t, cluster.Env(), args...)
}

func mustRouse(t *testing.T, args ...string) result {
	t.Helper()
	r := rouse(t, args...)
	if r.code != 0 {
		t.Fatalf("rouse %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// writeSpec writes an HCL spec running the hello app; extra goes inside the service block.
func writeSpec(t *testing.T, svc, extra string) string {
	t.Helper()
	_, hello := bins(t)
	p := filepath.Join(t.TempDir(), svc+".hcl")
	src := fmt.Sprintf(`variable "target" {
  default = "one"
}

service %q {
  command = %q
  env     = { TARGET = var.target }
  resources {
    cpu    = 50
    memory = 32
  }
  readiness { path = "/healthz" }
%s
}
`, svc, hello, extra)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func record(t *testing.T, svc string) *store.Service {
	t.Helper()
	rec, err := store.New(cluster.Consul).GetService(context.Background(), "default", svc)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func jobIDs(t *testing.T, svc string) map[string]bool {
	t.Helper()
	jobs, _, err := cluster.Nomad.Jobs().PrefixList(svc + "-")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, j := range jobs {
		out[j.ID] = j.Stop
	}
	return out
}

func wantRoute(t *testing.T, rec *store.Service, want ...store.RouteTarget) {
	t.Helper()
	if rec == nil {
		t.Fatal("no service record")
	}
	if fmt.Sprint(rec.Route) != fmt.Sprint(want) {
		t.Fatalf("route %v, want %v", rec.Route, want)
	}
}

// get asks a revision's instance directly (through Consul, as the gateway would).
func get(t *testing.T, rev string) string {
	t.Helper()
	var body string
	poll.Until(t, 30*time.Second, rev+" answering", func() error {
		es, _, err := cluster.Consul.Health().Service(rev, "", true, nil)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return errors.New("no passing instance in Consul")
		}
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/", es[0].Service.Address, es[0].Service.Port))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = strings.TrimSpace(string(b))
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %q", resp.Status, body)
		}
		return nil
	})
	return body
}

func decode[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, r)
	}
	return v
}

// TestLifecycle is the main path: apply → ready → route; unchanged re-apply; a
// new revision on change with the old one kept; rollback; a traffic split with a tag read
// back; list/describe/revisions; delete leaving nothing behind.
func TestLifecycle(t *testing.T) {
	spec := writeSpec(t, "life", "")
	r := mustRouse(t, "apply", "-f", spec)
	for _, want := range []string{"Creating revision life-00001", "Waiting for instance", "Routing traffic", "Done. URL: http://life.default.localhost"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("apply output lacks %q:\n%s", want, r)
		}
	}
	wantRoute(t, record(t, "life"), store.RouteTarget{Revision: "life-00001", Percent: 100})
	if got := get(t, "life-00001"); got != "Hello one!" {
		t.Fatalf("life-00001 says %q", got)
	}

	// Unchanged: nothing registered, same generation.
	before := record(t, "life")
	r = mustRouse(t, "apply", "-f", spec)
	if !strings.Contains(r.stdout, "Unchanged") || strings.Contains(r.stdout, "Creating") {
		t.Fatalf("re-apply:\n%s", r)
	}
	if after := record(t, "life"); after.Generation != before.Generation || len(jobIDs(t, "life")) != 1 {
		t.Fatalf("unchanged apply changed something: gen %d→%d, jobs %v", before.Generation, after.Generation, jobIDs(t, "life"))
	}

	// A changed env is a new revision; the old one stays.
	r = mustRouse(t, "apply", "-f", spec, "-var", "target=two", "-o", "json")
	res := decode[control.ApplyResult](t, r)
	if res.Revision != "life-00002" || res.Outcome != control.OutcomeCreated {
		t.Fatalf("apply -o json: %+v", res)
	}
	wantRoute(t, record(t, "life"), store.RouteTarget{Revision: "life-00002", Percent: 100})
	if jobs := jobIDs(t, "life"); len(jobs) != 2 || jobs["life-00001"] {
		t.Fatalf("jobs after change: %v (want both, running)", jobs)
	}
	if got := get(t, "life-00002"); got != "Hello two!" {
		t.Fatalf("life-00002 says %q", got)
	}

	// Rollback to the previous revision, then forward to a named one.
	r = mustRouse(t, "rollback", "life")
	if !strings.Contains(r.stdout, "from life-00002 to life-00001") {
		t.Fatalf("rollback:\n%s", r)
	}
	wantRoute(t, record(t, "life"), store.RouteTarget{Revision: "life-00001", Percent: 100})
	mustRouse(t, "rollback", "life", "life-00002")
	wantRoute(t, record(t, "life"), store.RouteTarget{Revision: "life-00002", Percent: 100})

	// A split with a tag, written and read back.
	mustRouse(t, "traffic", "life", "life-00001=90", "@latest=10", "--tag", "life-00001=stable")
	wantRoute(t, record(t, "life"),
		store.RouteTarget{Revision: "life-00001", Percent: 90, Tag: "stable"},
		store.RouteTarget{Revision: "life-00002", Percent: 10})
	d := decode[control.ServiceDetail](t, mustRouse(t, "describe", "life", "-o", "json"))
	if d.URL != "http://life.default.localhost" || len(d.Traffic) != 2 || !d.Traffic[1].Latest || d.Traffic[0].Tag != "stable" ||
		len(d.Tags) != 1 || d.Tags[0].URL != "http://stable-life.default.localhost" || d.Ready != control.True {
		t.Fatalf("describe: %+v", d)
	}
	if len(d.Revisions) != 2 || d.Revisions[0].Name != "life-00002" || d.Revisions[0].Percent != 10 || d.Revisions[1].Percent != 90 ||
		d.Revisions[0].Status != control.RevisionReady || d.Revisions[0].Desired != 1 {
		t.Fatalf("describe revisions: %+v", d.Revisions)
	}
	text := mustRouse(t, "describe", "life").stdout
	for _, want := range []string{"90%", "#stable", "http://stable-life.default.localhost", "life-00002 (latest)", "Ready"} {
		if !strings.Contains(text, want) {
			t.Errorf("describe text lacks %q:\n%s", want, text)
		}
	}
	revs := decode[[]control.RevisionInfo](t, mustRouse(t, "revisions", "life", "-o", "json"))
	if len(revs) != 2 || revs[1].Tags[0] != "stable" {
		t.Fatalf("revisions: %+v", revs)
	}
	// A revision's age is its registration, not its last Jobs.Scale (which moves
	// Nomad's SubmitTime).
	if _, _, err := cluster.Nomad.Jobs().Scale("life-00001", "app", ptrInt(2), "test", false, nil, nil); err != nil {
		t.Fatal(err)
	}
	after := decode[[]control.RevisionInfo](t, mustRouse(t, "revisions", "life", "-o", "json"))
	if !after[1].Created.Equal(revs[1].Created) || revs[1].Created.IsZero() {
		t.Fatalf("scaling moved the revision's creation time: %v → %v", revs[1].Created, after[1].Created)
	}
	list := decode[[]control.ServiceSummary](t, mustRouse(t, "list", "-o", "json"))
	found := false
	for _, s := range list {
		found = found || s.Name == "life"
	}
	if !found {
		t.Fatalf("list lacks life: %+v", list)
	}
	// A bad split is refused and changes nothing.
	if r := rouse(t, "traffic", "life", "life-00001=50", "@latest=10"); r.code != 1 || !strings.Contains(r.stderr, "sum to 60") {
		t.Fatalf("bad split: %s", r)
	}
	if r := rouse(t, "traffic", "life", "life-00009=100"); r.code != 1 || !strings.Contains(r.stderr, `no revision "life-00009"`) {
		t.Fatalf("unknown revision: %s", r)
	}

	// Re-applying the spec makes its traffic (100% latest) true again, without a revision.
	r = mustRouse(t, "apply", "-f", spec, "-var", "target=two")
	if strings.Contains(r.stdout, "Creating") {
		t.Fatalf("traffic-only apply created a revision:\n%s", r)
	}
	wantRoute(t, record(t, "life"), store.RouteTarget{Revision: "life-00002", Percent: 100})

	// Delete leaves no job, no KV key and no Consul service.
	mustRouse(t, "delete", "life")
	if jobs := jobIDs(t, "life"); len(jobs) != 0 {
		t.Fatalf("jobs left: %v", jobs)
	}
	for _, prefix := range []string{store.ServiceKey("default", "life"), store.RevisionKey("default", "life-")} {
		keys, _, err := cluster.Consul.KV().Keys(prefix, "", nil)
		if err != nil || len(keys) != 0 {
			t.Fatalf("KV keys left under %s: %v %v", prefix, keys, err)
		}
	}
	for _, rev := range []string{"life-00001", "life-00002"} {
		if es, _, err := cluster.Consul.Catalog().Service(rev, "", nil); err != nil || len(es) != 0 {
			t.Fatalf("consul still lists %s: %v %v", rev, es, err)
		}
	}
	if r := rouse(t, "describe", "life"); r.code != 1 || !strings.Contains(r.stderr, `service "life" not found`) {
		t.Fatalf("describe after delete: %s", r)
	}
}

// TestConcurrentApplies: two applies of different changes at once both land as distinct
// revisions (the generation is allocated with check-and-set), and the newer one serves.
func TestConcurrentApplies(t *testing.T) {
	spec := writeSpec(t, "race", "")
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, target := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = rouse(t, "apply", "-f", spec, "-var", "target="+target, "-o", "json")
		}()
	}
	wg.Wait()
	revs := map[string]bool{}
	for _, r := range results {
		if r.code != 0 {
			t.Fatalf("concurrent apply: %s", r)
		}
		revs[decode[control.ApplyResult](t, r).Revision] = true
	}
	if !revs["race-00001"] || !revs["race-00002"] {
		t.Fatalf("revisions %v, want race-00001 and race-00002", revs)
	}
	rec := record(t, "race")
	if rec.Generation != 2 || rec.LatestReady != "race-00002" || rec.Latest != "race-00002" {
		t.Fatalf("record after race: gen %d latest %s ready %s", rec.Generation, rec.Latest, rec.LatestReady)
	}
	wantRoute(t, rec, store.RouteTarget{Revision: "race-00002", Percent: 100})
	if jobs := jobIDs(t, "race"); len(jobs) != 2 {
		t.Fatalf("jobs %v", jobs)
	}
	mustRouse(t, "delete", "race")
}

// TestFailingRevision: a revision whose task exits 1 fails the apply with the task's
// error, the route stays on the previous revision, and the failed job is stopped.
func TestFailingRevision(t *testing.T) {
	good := writeSpec(t, "fail", "")
	mustRouse(t, "apply", "-f", good)

	bad := filepath.Join(t.TempDir(), "bad.hcl")
	if err := os.WriteFile(bad, []byte(`service "fail" {
  command = "/bin/sh"
  args    = ["-c", "echo cannot open database >&2; exit 1"]
  resources {
    cpu    = 50
    memory = 32
  }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := rouse(t, "apply", "-f", bad)
	if r.code != 1 {
		t.Fatalf("failing apply should exit 1: %s", r)
	}
	for _, want := range []string{"revision fail-00002 failed", "Terminated: Exit Code: 1", "cannot open database", "route is unchanged"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("failing apply output lacks %q:\n%s", want, r)
		}
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("a failing revision took %s to report", took)
	}
	rec := record(t, "fail")
	wantRoute(t, rec, store.RouteTarget{Revision: "fail-00001", Percent: 100})
	if rec.LatestReady != "fail-00001" || rec.Latest != "fail-00002" {
		t.Fatalf("record: latest %s ready %s", rec.Latest, rec.LatestReady)
	}
	if stopped, ok := jobIDs(t, "fail")["fail-00002"]; !ok || !stopped {
		t.Fatalf("failed revision job should exist, stopped: %v", jobIDs(t, "fail"))
	}
	d := decode[control.ServiceDetail](t, mustRouse(t, "describe", "fail", "-o", "json"))
	if d.Ready != control.False || !strings.Contains(d.Conditions[0].Message, "Exit Code: 1") {
		t.Fatalf("describe after failure: %+v", d.Conditions)
	}

	// Not ready in time: the process runs but never listens.
	slow := filepath.Join(t.TempDir(), "slow.hcl")
	if err := os.WriteFile(slow, []byte(`service "fail" {
  command = "/bin/sleep"
  args    = ["300"]
  resources {
    cpu    = 50
    memory = 32
  }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r = rouse(t, "apply", "-f", slow, "--wait", "4s")
	if r.code != 1 || !strings.Contains(r.stderr, "not ready within 4s") {
		t.Fatalf("slow apply: %s", r)
	}
	wantRoute(t, record(t, "fail"), store.RouteTarget{Revision: "fail-00001", Percent: 100})

	// GC purges the stopped revisions beyond --keep, never the serving one.
	r = mustRouse(t, "gc", "fail", "--keep", "0")
	jobs := jobIDs(t, "fail")
	if _, ok := jobs["fail-00001"]; !ok || len(jobs) != 2 {
		t.Fatalf("after gc --keep 0: jobs %v\n%s", jobs, r)
	}
	mustRouse(t, "delete", "fail")
}

// TestCommandLineErrors: usage mistakes exit 2 with a pointer to --help; bad specs print
// file:line:col with the source; unreachable agents name the address and the variable.
func TestCommandLineErrors(t *testing.T) {
	r := rouse(t, "apply", "--bogus")
	if r.code != 2 || !strings.Contains(r.stderr, "unknown flag: --bogus") || !strings.Contains(r.stderr, "rouse apply --help") {
		t.Fatalf("unknown flag: %s", r)
	}
	r = rouse(t, "describe")
	if r.code != 2 || !strings.Contains(r.stderr, "expected SERVICE") {
		t.Fatalf("missing arg: %s", r)
	}
	r = rouse(t, "apply")
	if r.code != 2 {
		t.Fatalf("apply without -f: %s", r)
	}

	bad := filepath.Join(t.TempDir(), "bad.hcl")
	if err := os.WriteFile(bad, []byte("service \"x\" {\n  command = \"/bin/true\"\n  timeout = \"2h\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = rouse(t, "apply", "-f", bad)
	if r.code != 1 || !strings.Contains(r.stderr, bad+":3:") || !strings.Contains(r.stderr, `timeout = "2h"`) {
		t.Fatalf("bad spec: %s", r)
	}

	r = rouseEnv(t, []string{"CONSUL_HTTP_ADDR=127.0.0.1:1", "NOMAD_ADDR=" + cluster.NomadAddr}, "list")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Consul at http://127.0.0.1:1") || !strings.Contains(r.stderr, "(set CONSUL_HTTP_ADDR)") {
		t.Fatalf("consul unreachable: %s", r)
	}
	r = rouseEnv(t, []string{"CONSUL_HTTP_ADDR=" + cluster.ConsulAddr, "NOMAD_ADDR=http://127.0.0.1:1"}, "apply", "-f", writeSpec(t, "unreach", ""))
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Nomad at http://127.0.0.1:1") || !strings.Contains(r.stderr, "(set NOMAD_ADDR)") {
		t.Fatalf("nomad unreachable: %s", r)
	}
	if strings.Contains(r.stderr, "panic") {
		t.Fatal(r)
	}
}

// TestACL: on ACL-enabled agents, missing permissions are one clear line naming the
// capability and the variable; a token with the right (narrow) policies works.
func TestACL(t *testing.T) {
	acl, err := testcluster.Start(testcluster.Options{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	defer acl.Stop()
	// A production Consul agent with ACLs has an agent token; without one it cannot sync
	// Nomad's service deregistrations to the catalog ("Service deregistration blocked by
	// ACLs"), and delete would wait for instances that are long gone.
	if _, err := acl.Consul.Agent().UpdateAgentACLToken(acl.ConsulToken, nil); err != nil {
		t.Fatal(err)
	}
	spec := writeSpec(t, "secure", "")
	addrs := []string{"NOMAD_ADDR=" + acl.NomadAddr, "CONSUL_HTTP_ADDR=" + acl.ConsulAddr}

	// Consul: a token for rouse's KV prefix and reading services.
	pol, _, err := acl.Consul.ACL().PolicyCreate(&consulapi.ACLPolicy{Name: "rouse",
		Rules: `key_prefix "rouse/" { policy = "write" }
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctok, _, err := acl.Consul.ACL().TokenCreate(&consulapi.ACLToken{Policies: []*consulapi.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Nomad: a read-only token and a deployer token.
	readTok := nomadToken(t, acl, "reader", `namespace "default" { policy = "read" }`)
	deployTok := nomadToken(t, acl, "deployer", `namespace "default" { capabilities = ["list-jobs", "read-job", "submit-job", "read-logs"] }`)

	r := rouseEnv(t, addrs, "apply", "-f", spec)
	if r.code != 1 || !strings.Contains(r.stderr, "consul: permission denied: this token needs key:read on rouse/services/default/secure (CONSUL_HTTP_TOKEN is not set)") {
		t.Fatalf("no tokens: %s", r)
	}
	withConsul := append(addrs, "CONSUL_HTTP_TOKEN="+ctok.SecretID)
	r = rouseEnv(t, withConsul, "apply", "-f", spec)
	if r.code != 1 || !strings.Contains(r.stderr, "nomad: permission denied: this token needs list-jobs on namespace default (NOMAD_TOKEN is not set)") {
		t.Fatalf("no nomad token: %s", r)
	}
	r = rouseEnv(t, append(withConsul, "NOMAD_TOKEN="+readTok), "apply", "-f", spec)
	if r.code != 1 || !strings.Contains(r.stderr, "nomad: permission denied: this token needs submit-job on namespace default (NOMAD_TOKEN)") {
		t.Fatalf("read-only nomad token: %s", r)
	}
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
		t.Errorf("permission error should be one line:\n%s", r.stderr)
	}
	r = rouseEnv(t, append(withConsul, "NOMAD_TOKEN=00000000-1111-2222-3333-444444444444"), "list")
	if r.code != 0 {
		t.Fatalf("list needs only consul: %s", r)
	}
	r = rouseEnv(t, append(withConsul, "NOMAD_TOKEN=00000000-1111-2222-3333-444444444444"), "revisions", "secure")
	if r.code != 1 || !strings.Contains(r.stderr, "the token in NOMAD_TOKEN is not valid") {
		t.Fatalf("unknown nomad token: %s", r)
	}

	good := append(withConsul, "NOMAD_TOKEN="+deployTok)
	r = rouseEnv(t, good, "apply", "-f", spec)
	if r.code != 0 || !strings.Contains(r.stdout, "Done. URL: http://secure.default.localhost") {
		t.Fatalf("proper tokens: %s", r)
	}
	if r := rouseEnv(t, good, "describe", "secure"); r.code != 0 {
		t.Fatalf("describe with proper tokens: %s", r)
	}
	if r := rouseEnv(t, good, "delete", "secure"); r.code != 0 || r.stderr != "" {
		t.Fatalf("delete with proper tokens: %s", r)
	}
}

func nomadToken(t *testing.T, c *testcluster.Cluster, name, rules string) string {
	t.Helper()
	if _, err := c.Nomad.ACLPolicies().Upsert(&nomadapi.ACLPolicy{Name: name, Rules: rules}, nil); err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.Nomad.ACLTokens().Create(&nomadapi.ACLToken{Name: name, Type: "client", Policies: []string{name}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.SecretID
}

// TestDetachReuseAndGC: --detach registers without routing; the next apply of the same
// spec picks that revision up instead of creating another; GC on apply purges revisions
// without traffic beyond --keep, jobs and configs both.
func TestDetachReuseAndGC(t *testing.T) {
	spec := writeSpec(t, "keep", "")
	mustRouse(t, "apply", "-f", spec)

	res := decode[control.ApplyResult](t, mustRouse(t, "apply", "-f", spec, "-var", "target=two", "--detach", "-o", "json"))
	if res.Outcome != control.OutcomeDetached || res.Revision != "keep-00002" {
		t.Fatalf("detach: %+v", res)
	}
	wantRoute(t, record(t, "keep"), store.RouteTarget{Revision: "keep-00001", Percent: 100})

	r := mustRouse(t, "apply", "-f", spec, "-var", "target=two")
	if !strings.Contains(r.stdout, "Using existing revision keep-00002") || strings.Contains(r.stdout, "Creating") {
		t.Fatalf("apply after detach:\n%s", r)
	}
	wantRoute(t, record(t, "keep"), store.RouteTarget{Revision: "keep-00002", Percent: 100})

	r = mustRouse(t, "apply", "-f", spec, "-var", "target=three", "--keep", "0")
	wantRoute(t, record(t, "keep"), store.RouteTarget{Revision: "keep-00003", Percent: 100})
	if jobs := jobIDs(t, "keep"); len(jobs) != 1 {
		t.Fatalf("after apply --keep 0: jobs %v\n%s", jobs, r)
	}
	keys, _, err := cluster.Consul.KV().Keys(store.RevisionKey("default", "keep-"), "", nil)
	if err != nil || len(keys) != 1 || keys[0] != store.RevisionKey("default", "keep-00003") {
		t.Fatalf("revision configs after GC: %v %v", keys, err)
	}
	mustRouse(t, "delete", "keep")
}

// TestInitialZeroStartsNothing: a revision with min = initial = 0 is registered at count
// 0 and routed; apply says so and starts no instance (the first request wakes it).
func TestInitialZeroStartsNothing(t *testing.T) {
	spec := writeSpec(t, "zero", `  autoscaling {
    min     = 0
    initial = 0
  }`)
	start := time.Now()
	r := mustRouse(t, "apply", "-f", spec, "--wait", "60s")
	if !strings.Contains(r.stdout, "zero-00001 is routed at zero: no instance started; the first request wakes it") {
		t.Fatalf("apply: %s", r)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("apply at zero took %s", took)
	}
	job, _, err := cluster.Nomad.Jobs().Info("zero-00001", nil)
	if err != nil || *job.TaskGroups[0].Count != 0 {
		t.Fatalf("zero-00001 count: %v %v", job, err)
	}
	wantRoute(t, record(t, "zero"), store.RouteTarget{Revision: "zero-00001", Percent: 100})
	res := decode[control.ApplyResult](t, mustRouse(t, "apply", "-f", spec, "-o", "json"))
	if res.Outcome != control.OutcomeUnchanged {
		t.Fatalf("re-apply: %+v", res)
	}
	mustRouse(t, "delete", "zero")
}

// TestImageErrorsAtApply: a tag that cannot be resolved is a spec error pointing at the
// image, before anything is registered; --no-resolve-image skips the registry, and
// Nomad's plan still stops a revision no node can run, registering nothing.
func TestImageErrorsAtApply(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	p := filepath.Join(t.TempDir(), "img.hcl")
	src := fmt.Sprintf(`service "img" {
  image = "%s/img:1"
  autoscaling { initial = 0 }
  constraint {
    attribute = "${node.class}"
    value     = "no-such-class"
  }
}
`, dead)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := rouse(t, "apply", "-f", p)
	for _, want := range []string{"Error: Cannot resolve image", p + ":2:", "connection refused", "--no-resolve-image", "Nothing was registered"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("output lacks %q:\n%s", want, r)
		}
	}
	if r.code != 1 || time.Since(start) > 10*time.Second {
		t.Fatalf("exit %d after %s", r.code, time.Since(start))
	}

	r = rouse(t, "apply", "-f", p, "--no-resolve-image")
	if r.code != 1 || !strings.Contains(r.stderr, "nomad cannot place revision img-00001: no node can run it") ||
		!strings.Contains(r.stderr, "nothing was registered") {
		t.Fatalf("unplaceable revision: %s", r)
	}
	if jobs := jobIDs(t, "img"); len(jobs) != 0 {
		t.Fatalf("jobs after failed applies: %v", jobs)
	}
	if rec := record(t, "img"); rec != nil {
		t.Fatalf("record after failed applies: %+v", rec)
	}
}

func TestImageText(t *testing.T) {
	d := "sha256:" + strings.Repeat("3f", 32)
	for _, tc := range [][3]string{
		{"127.0.0.1:5000/hi:1", d, "127.0.0.1:5000/hi:1 @ sha256:3f3f3f3f3f3f…"},
		{"127.0.0.1:5000/hi@" + d, d, "127.0.0.1:5000/hi@" + d},
		{"127.0.0.1:5000/hi:1", "", "127.0.0.1:5000/hi:1 (follows tag)"},
		{"", "", "-"},
	} {
		if got := imageText(tc[0], tc[1]); got != tc[2] {
			t.Errorf("imageText(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}

// TestDaemonsStartAndStop: `rouse gateway` and `rouse scaler` come up against the cluster
// from the standard variables, serve, and exit 0 on SIGTERM.
func TestDaemonsStartAndStop(t *testing.T) {
	bin, _ := bins(t)
	for _, args := range [][]string{
		{"gateway", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--id", "test", "--register=false"},
		{"scaler", "--admin-listen", "127.0.0.1:0", "--id", "test"},
	} {
		t.Run(args[0], func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, cluster.Env()...)
			pr, pw := io.Pipe()
			cmd.Stderr, cmd.Stdout = pw, io.Discard
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := make(chan string, 100)
			go func() {
				b := make([]byte, 4096)
				var acc string
				for {
					n, err := pr.Read(b)
					acc += string(b[:n])
					for {
						i := strings.IndexByte(acc, '\n')
						if i < 0 {
							break
						}
						lines <- acc[:i]
						acc = acc[i+1:]
					}
					if err != nil {
						close(lines)
						return
					}
				}
			}()
			var banner string
			deadline := time.After(30 * time.Second)
			for banner == "" {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatal("exited before serving")
					}
					if strings.HasPrefix(l, "rouse "+args[0]+":") {
						banner = l
					}
				case <-deadline:
					t.Fatal("no banner within 30s")
				}
			}
			// The banner names the admin URL; it must answer.
			admin := banner[strings.LastIndex(banner, "http://"):]
			resp, err := http.Get(admin + "/metrics")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s: %v %v", banner, resp, err)
			}
			resp.Body.Close()
			rest, status := make(chan []string, 1), ""
			go func() {
				var all []string
				for l := range lines {
					all = append(all, l)
				}
				rest <- all
			}()
			if args[0] == "gateway" {
				// A request for no service: its access-log line is buffered, and must be
				// written by the time the gateway exits.
				public := banner[strings.Index(banner, " on ")+4 : strings.Index(banner, ", admin")]
				req, _ := http.NewRequest("GET", "http://"+public+"/nothing", nil)
				req.Host = "nobody.default.localhost"
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("public %s: %v", public, err)
				}
				resp.Body.Close()
				status = fmt.Sprintf(`"status":%d`, resp.StatusCode) // 404, or 503 before the first route table
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after SIGTERM: %v", err)
				}
			case <-time.After(40 * time.Second):
				t.Fatal("did not exit within 40s of SIGTERM")
			}
			pw.Close()
			all := <-rest
			if args[0] == "gateway" && !slices.ContainsFunc(all, func(l string) bool {
				return strings.Contains(l, `"logger":"gateway.access"`) && strings.Contains(l, `"uri":"/nothing"`) && strings.Contains(l, status)
			}) {
				t.Fatalf("no access-log line for the request in the gateway's stderr:\n%s", strings.Join(all, "\n"))
			}
		})
	}
}

func ptrInt(n int) *int { return &n }

// TestRouteWaitsForGateways: a route change returns only once every passing gateway
// reports (service meta routes_index) a table at least as new as the write; a gateway that
// never catches up gets a warning after the wait, not a failure.
func TestRouteWaitsForGateways(t *testing.T) {
	spec := writeSpec(t, "gwwait", "")
	mustRouse(t, "apply", "-f", spec, "--wait", "60s")
	t.Cleanup(func() { rouse(t, "delete", "gwwait") })

	agent := cluster.Consul.Agent()
	fake := func(idx uint64) {
		t.Helper()
		err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: "fake-gw", Name: gauges.GatewayService, Port: 1,
			Meta:  map[string]string{gauges.MetaRoutesIndex: strconv.FormatUint(idx, 10)},
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	fake(1)
	t.Cleanup(func() { _ = agent.ServiceDeregister("fake-gw") })
	key := store.ServiceKey("default", "gwwait")
	pair, _, err := cluster.Consul.KV().Get(key, nil)
	if err != nil || pair == nil {
		t.Fatalf("read %s: %v", key, err)
	}

	// The fake gateway loads the route 700 ms after it is written.
	const lag = 700 * time.Millisecond
	loaded := make(chan error, 1)
	go func() {
		p, _, err := cluster.Consul.KV().Get(key, &consulapi.QueryOptions{WaitIndex: pair.ModifyIndex, WaitTime: 30 * time.Second})
		if err == nil && p.ModifyIndex == pair.ModifyIndex {
			err = fmt.Errorf("%s was not written", key)
		}
		if err != nil {
			loaded <- err
			return
		}
		time.Sleep(lag)
		fake(p.ModifyIndex)
		loaded <- nil
	}()
	start := time.Now()
	r := mustRouse(t, "traffic", "gwwait", "--tag", "gwwait-00001=one")
	took := time.Since(start)
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if took < lag {
		t.Errorf("traffic returned after %v, before the gateway loaded the route (%v)", took, lag)
	}
	if strings.Contains(r.stderr, "Warning") {
		t.Errorf("a gateway that caught up must not be warned about: %s", r)
	}

	// Now it never catches up: the change lands, with a warning naming it.
	start = time.Now()
	r = mustRouse(t, "traffic", "gwwait", "--tag", "gwwait-00001=two")
	took = time.Since(start)
	if !strings.Contains(r.stderr, "Warning: gateway(s) fake-gw did not load the route change within 10s") {
		t.Errorf("want a warning naming fake-gw: %s", r)
	}
	if took < 10*time.Second || took > 20*time.Second {
		t.Errorf("traffic with a lagging gateway took %v, want the 10s wait", took)
	}
	tagged := false
	for _, rt := range record(t, "gwwait").Route {
		tagged = tagged || rt.Tag == "two"
	}
	if !tagged {
		t.Errorf("the route must be written despite the lagging gateway: %+v", record(t, "gwwait").Route)
	}

	// delete stops the instances only after the gateway has dropped the route.
	fake(record(t, "gwwait").ModifyIndex())
	cur, _, err := cluster.Consul.KV().Get(key, nil)
	if err != nil || cur == nil {
		t.Fatalf("read %s: %v", key, err)
	}
	go func() {
		p, meta, err := cluster.Consul.KV().Get(key, &consulapi.QueryOptions{WaitIndex: cur.ModifyIndex, WaitTime: 30 * time.Second})
		if err == nil && p != nil {
			err = fmt.Errorf("%s was not deleted", key)
		}
		if err != nil {
			loaded <- err
			return
		}
		time.Sleep(lag)
		jobs, _, err := cluster.Nomad.Jobs().PrefixList("gwwait-")
		running := false
		for _, j := range jobs {
			running = running || (j.ID == "gwwait-00001" && !j.Stop)
		}
		if err == nil && !running {
			err = fmt.Errorf("the revision's job was stopped before the gateway dropped the route")
		}
		fake(meta.LastIndex)
		loaded <- err
	}()
	start = time.Now()
	r = mustRouse(t, "delete", "gwwait")
	took = time.Since(start)
	if err := <-loaded; err != nil {
		t.Error(err)
	}
	if took < lag || strings.Contains(r.stderr, "Warning") {
		t.Errorf("delete took %v (want ≥ %v, the gateway's lag) with no warning: %s", took, lag, r)
	}
}

// TestLogs: `rouse logs` prints the instances' output with revision and instance, and -f
// streams a line written after it started.
func TestLogs(t *testing.T) {
	spec := writeSpec(t, "logs", "")
	mustRouse(t, "apply", "-f", spec, "--wait", "60s")
	t.Cleanup(func() { rouse(t, "delete", "logs") })

	var r result
	poll.Until(t, 15*time.Second, "the startup line in rouse logs", func() error {
		if r = mustRouse(t, "logs", "logs"); !strings.Contains(r.stdout, "hello: listening on") {
			return fmt.Errorf("rouse logs printed %q", r.stdout)
		}
		return nil
	})
	if !strings.HasPrefix(r.stdout, "logs-00001 ") {
		t.Errorf("lines must start with the revision: %s", r)
	}
	if j := mustRouse(t, "logs", "logs", "-o", "json", "--tail", "1"); !strings.Contains(j.stdout, `"revision":"logs-00001"`) || strings.Count(j.stdout, "\n") != 1 {
		t.Errorf("-o json --tail 1: want one JSON line: %s", j)
	}
	if e := rouse(t, "logs", "nosuch"); e.code == 0 || !strings.Contains(e.stderr, "nosuch") {
		t.Errorf("logs of a missing service must fail naming it: %s", e)
	}
	if e := rouse(t, "logs", "logs", "--revision", "logs-00009"); e.code == 0 || !strings.Contains(e.stderr, "logs-00009") {
		t.Errorf("logs of a missing revision must fail naming it: %s", e)
	}

	// -f: a request made after it started shows up.
	bin, _ := bins(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "logs", "logs", "-f", "--tail", "0")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, cluster.Env()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// check is one followed line: "logs-00001 INSTANCE  LINE"; it returns the instance.
	check := func(l string) string {
		t.Helper()
		t.Logf("followed: %s", l)
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "logs-00001" {
			t.Fatalf("want \"logs-00001 INSTANCE  LINE\", got %q", l)
		}
		return f[1]
	}
	// next waits for a followed line that match accepts; it returns the line's instance.
	next := func(what string, match func(inst, line string) bool) string {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("rouse logs -f ended before %s", what)
				}
				if inst := check(l); match(inst, l) {
					return inst
				}
			case <-deadline:
				t.Fatalf("rouse logs -f did not show %s within 20s", what)
			}
		}
	}
	// A request made after the stream opened shows up. When it opens is the command's own
	// business (a line written before then is the tail, which --tail 0 skips), so ask
	// until a request's line comes through rather than sleep and ask once.
	var first string
	poll.Until(t, 20*time.Second, "a request made after it started, followed", func() error {
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("rouse logs -f ended before a request's line")
				}
				inst := check(l)
				if strings.Contains(l, "hello: listening") {
					t.Errorf("--tail 0 must not print the backlog: %s", l)
				}
				if strings.HasSuffix(l, "GET /") {
					first = inst
					return nil
				}
			default:
				get(t, "logs-00001")
				return errors.New("no request's line followed yet")
			}
		}
	})
	// An instance that starts while following (as when the scaler adds one, or wakes the
	// revision from zero) shows up too, from its first line.
	if _, _, err := cluster.Nomad.Jobs().Scale("logs-00001", "app", ptrInt(2), "test", false, nil, nil); err != nil {
		t.Fatal(err)
	}
	next("the startup line of an instance added while following", func(inst, l string) bool {
		return inst != first && strings.Contains(l, "hello: listening")
	})
	_ = cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("rouse logs -f on Ctrl-C: %v, want exit 0", err)
	}
}
