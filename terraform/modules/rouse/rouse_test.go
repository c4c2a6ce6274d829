// Package rouse_test runs this Terraform module's deployment artifacts for real: the
// jobspecs, the ACL policies and the variable wiring of main.tf, on a Consul + Nomad pair
// with default-deny ACLs. No terraform binary exists here, so the test does what the
// module's resources do, with the module's own files: main.tf's locals are evaluated
// (like terraform would) into the jobspecs' hcl2 vars, policies come from policies/, and
// the gateway and scaler run with exactly the tokens and workload identity the module
// gives them. Then a service is deployed with `rouse apply` and reached through the
// gateway, scaled to zero by the scaler and woken again.
package rouse_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/store"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(testcluster.Run(m, testcluster.Options{ACL: true}, &cluster))
}

func TestModuleDeploysRouseThatServesAndScalesHello(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// within keeps every wait inside the test's own six minutes.
	deadline, _ := ctx.Deadline()
	within := func(d time.Duration) time.Duration { return min(d, time.Until(deadline)) }

	rouseBin, err := cluster.GoBuild("./cmd/rouse")
	if err != nil {
		t.Fatal(err)
	}
	helloBin, err := cluster.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := agents.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	publicPort := ports[0]

	// The module's inputs for a test deployment; everything else keeps its default.
	mod := evalModule(t, map[string]cty.Value{
		"domain":              cty.StringVal("localhost"),
		"driver":              cty.StringVal("raw_exec"),
		"rouse_binary":        cty.StringVal(rouseBin),
		"consul_address":      cty.StringVal(cluster.ConsulAddr),
		"gateway_public_port": cty.NumberIntVal(int64(publicPort)),
		"log_level":           cty.StringVal("debug"),
		// The Task API socket path under the test cluster's data dir is longer than a
		// unix socket path may be (108 bytes); the workload identity token is accepted
		// on the HTTP API just the same.
		"nomad_address": cty.StringVal(cluster.NomadAddr),
	})
	ns := mod.str(t, "var.namespace")
	gatewayJob, scalerJob := mod.str(t, "var.gateway_job_name"), mod.str(t, "var.scaler_job_name")

	// A real cluster's Consul agents hold an agent token (cluster-aws sets tokens.agent);
	// the test cluster's does not, and then cannot sync deregistrations to the catalog, so
	// instances stopped by scale-down would stay listed. Give it one at runtime.
	if _, err := cluster.Consul.Agent().UpdateAgentACLToken(cluster.ConsulToken, nil); err != nil {
		t.Fatalf("consul agent token: %v", err)
	}

	// consul_acl_policy + consul_acl_token, gateway and scaler.
	gatewayToken := consulToken(t, gatewayJob, "policies/gateway.consul.hcl")
	scalerToken := consulToken(t, scalerJob, "policies/scaler.consul.hcl")
	// The scaler records a revision whose instances fail to start (store.PutFailure: the
	// record and its journal entry in one transaction) with its own token.
	{
		cc := consulapi.DefaultConfig()
		cc.Address, cc.Token = cluster.ConsulAddr, scalerToken
		c, err := consulapi.NewClient(cc)
		if err != nil {
			t.Fatal(err)
		}
		f := store.Failure{Namespace: ns, Revision: "acl-check-00001", Reason: "exit 1", At: time.Now(), RetryAt: time.Now().Add(time.Minute)}
		if err := store.New(c).PutFailure(context.Background(), f); err != nil {
			t.Fatalf("the scaler's token cannot write a failure record: %v", err)
		}
		if err := store.New(c).DeleteFailure(context.Background(), ns, f.Revision); err != nil {
			t.Fatalf("the scaler's token cannot delete a failure record: %v", err)
		}
	}

	// nomad_acl_policy.scaler: the rendered template, attached to the scaler job.
	rules := renderTemplate(t, "policies/scaler.nomad.hcl.tftpl", map[string]cty.Value{"namespaces": mod.vars["managed_namespaces"]})
	if _, err := cluster.Nomad.ACLPolicies().Upsert(&nomadapi.ACLPolicy{
		Name: scalerJob, Rules: rules, JobACL: &nomadapi.JobACL{Namespace: ns, JobID: scalerJob},
	}, nil); err != nil {
		t.Fatalf("nomad acl policy: %v\n%s", err, rules)
	}

	// nomad_variable.gateway / .scaler.
	for job, tok := range map[string]string{gatewayJob: gatewayToken, scalerJob: scalerToken} {
		v := &nomadapi.Variable{Namespace: ns, Path: "nomad/jobs/" + job, Items: nomadapi.VariableItems{"consul_token": tok}}
		if _, _, err := cluster.Nomad.Variables().Create(v, &nomadapi.WriteOptions{Namespace: ns}); err != nil {
			t.Fatalf("nomad variable %s: %v", v.Path, err)
		}
	}

	// nomad_job.gateway / .scaler: the jobspec files with main.tf's hcl2 vars.
	for _, j := range []struct{ file, vars string }{{"gateway.nomad.hcl", "gateway_vars"}, {"scaler.nomad.hcl", "scaler_vars"}} {
		job := renderJob(t, j.file, mod.locals[j.vars])
		if _, _, err := cluster.Nomad.Jobs().Register(job, &nomadapi.WriteOptions{Namespace: ns}); err != nil {
			t.Fatalf("register %s: %v", j.file, err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				dumpTaskLogs(t, ns, *job.ID)
			}
		})
	}

	// The gateway runs as a system job on the one node, registers itself in Consul with its
	// own token (service rouse-gateway) and Nomad registers its public port.
	poll.Until(t, within(90*time.Second), "gateway allocation running", func() error {
		return allocsRunning(ns, gatewayJob, 1)
	})
	poll.Until(t, within(60*time.Second), "rouse-gateway passing in Consul", func() error {
		return passing("rouse-gateway", 1)
	})
	poll.Until(t, within(60*time.Second), gatewayJob+"-http passing in Consul", func() error {
		return passing(gatewayJob+"-http", 1)
	})
	// Two scalers, one holding the leader lock: session + key write work with its token.
	poll.Until(t, within(90*time.Second), "2 scaler allocations running", func() error {
		return allocsRunning(ns, scalerJob, 2)
	})
	poll.Until(t, within(60*time.Second), "the scaler leader lock held", func() error {
		kv, _, err := cluster.Consul.KV().Get("rouse/scaler/leader", nil)
		if err != nil || kv == nil {
			return fmt.Errorf("no key yet, err=%v", err)
		}
		if kv.Session == "" {
			return fmt.Errorf("value %q session %q", kv.Value, kv.Session)
		}
		return nil
	})

	// A revision of examples/hello that may scale to zero quickly.
	spec := filepath.Join(t.TempDir(), "service.hcl")
	if err := os.WriteFile(spec, fmt.Appendf(nil, `service "hello" {
  namespace = %q
  driver    = "raw_exec"
  command   = %q
  env       = { TARGET = "terraform" }

  resources {
    cpu    = 100
    memory = 64
  }

  readiness { path = "/healthz" }

  autoscaling {
    min                 = 0
    max                 = 3
    window              = "6s"
    scale_to_zero_grace = "0s"
  }
}
`, ns, helloBin), 0o644); err != nil {
		t.Fatal(err)
	}
	applyCtx, applyCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer applyCancel()
	apply := exec.CommandContext(applyCtx, rouseBin, "apply", "-f", spec)
	apply.Env = append(os.Environ(), cluster.Env()...)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("rouse apply: %v\n%s", err, out)
	}

	get := func() error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:"+strconv.Itoa(publicPort)+"/", nil)
		req.Host = "hello." + ns + ".localhost"
		cl := &http.Client{Timeout: 30 * time.Second}
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "Hello terraform!" {
			return fmt.Errorf("%d %q", resp.StatusCode, body)
		}
		return nil
	}
	poll.Until(t, within(30*time.Second), "hello answering through the gateway", get)

	// The scaler may scale revision jobs (its policy, through its workload identity): with
	// no traffic it takes hello to zero, and the next request wakes it again.
	poll.Until(t, within(90*time.Second), "the scaler scaling hello to zero", func() error {
		job, _, err := cluster.Nomad.Jobs().Info("hello-00001", &nomadapi.QueryOptions{Namespace: ns})
		if err != nil {
			return err
		}
		if c := *job.TaskGroups[0].Count; c != 0 {
			return fmt.Errorf("count %d", c)
		}
		return nil
	})
	// Only once no instance is left is the next request a real cold start.
	poll.Until(t, within(60*time.Second), "hello's last instance gone", func() error {
		if err := allocsRunning(ns, "hello-00001", 0); err != nil {
			return err
		}
		es, _, err := cluster.Consul.Health().Service("hello-00001", "", false, nil)
		if err != nil {
			return err
		}
		if len(es) != 0 {
			return fmt.Errorf("%d instances in Consul", len(es))
		}
		return nil
	})
	start := time.Now()
	if err := get(); err != nil {
		t.Fatalf("request to a revision at zero: got %v, want 200 \"Hello terraform!\"", err)
	}
	t.Logf("woke hello from zero through the gateway and scaler in %s", time.Since(start).Round(time.Millisecond))
	job, _, err := cluster.Nomad.Jobs().Info("hello-00001", &nomadapi.QueryOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if c := *job.TaskGroups[0].Count; c < 1 {
		t.Fatalf("hello answered but its count is %d", c)
	}
}

// --- Terraform, the parts this test needs -------------------------------------------------

// tfModule holds the module's evaluated inputs and locals.
type tfModule struct {
	vars, locals map[string]cty.Value
}

func (m *tfModule) str(t *testing.T, ref string) string {
	t.Helper()
	name, ok := strings.CutPrefix(ref, "var.")
	v := m.vars[name]
	if !ok || v.IsNull() || v.Type() != cty.String {
		t.Fatalf("%s is not a string", ref)
	}
	return v.AsString()
}

// evalModule resolves variables.tf with the given values (defaults for the rest,
// converted to each declared type) and then main.tf's locals, as terraform would.
func evalModule(t *testing.T, given map[string]cty.Value) *tfModule {
	t.Helper()
	m := &tfModule{vars: map[string]cty.Value{}, locals: map[string]cty.Value{}}
	for _, b := range parseFile(t, "variables.tf").Blocks {
		if b.Type != "variable" {
			continue
		}
		name := b.Labels[0]
		ty, diags := typeexpr.TypeConstraint(b.Body.Attributes["type"].Expr)
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		v, ok := given[name]
		if !ok {
			def, has := b.Body.Attributes["default"]
			if !has {
				t.Fatalf("variable %q is required and the test gives no value", name)
			}
			if v, diags = def.Expr.Value(nil); diags.HasErrors() {
				t.Fatal(diags.Error())
			}
		}
		cv, err := convert.Convert(v, ty)
		if err != nil {
			t.Fatalf("variable %q: %v", name, err)
		}
		m.vars[name] = cv
	}
	for name := range given {
		if _, ok := m.vars[name]; !ok {
			t.Fatalf("the module has no variable %q", name)
		}
	}
	var attrs hclsyntax.Attributes = map[string]*hclsyntax.Attribute{}
	for _, b := range parseFile(t, "main.tf").Blocks {
		if b.Type == "locals" {
			for n, a := range b.Body.Attributes {
				attrs[n] = a
			}
		}
	}
	// Locals may refer to each other: evaluate until every one resolves.
	for len(m.locals) < len(attrs) {
		progress := false
		for name, a := range attrs {
			if _, done := m.locals[name]; done {
				continue
			}
			v, diags := a.Expr.Value(m.evalContext())
			if diags.HasErrors() {
				continue
			}
			m.locals[name], progress = v, true
		}
		if !progress {
			for name, a := range attrs {
				if _, done := m.locals[name]; !done {
					_, diags := a.Expr.Value(m.evalContext())
					t.Fatalf("local.%s: %s", name, diags.Error())
				}
			}
		}
	}
	return m
}

func (m *tfModule) evalContext() *hcl.EvalContext {
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":   cty.ObjectVal(m.vars),
			"local": cty.ObjectVal(m.locals),
			"path":  cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(".")}),
		},
		// The functions main.tf's locals use, with terraform's semantics.
		Functions: map[string]function.Function{
			"merge":      stdlib.MergeFunc,
			"jsonencode": stdlib.JSONEncodeFunc,
			"tostring": function.New(&function.Spec{
				Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType}},
				Type:   function.StaticReturnType(cty.String),
				Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
					return convert.Convert(args[0], cty.String)
				},
			}),
		},
	}
}

func parseFile(t *testing.T, path string) *hclsyntax.Body {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return f.Body.(*hclsyntax.Body)
}

// renderTemplate is templatefile(): HCL template syntax over the given variables.
func renderTemplate(t *testing.T, path string, vars map[string]cty.Value) string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, diags := hclsyntax.ParseTemplate(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	v, diags := tmpl.Value(&hcl.EvalContext{Variables: vars})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return v.AsString()
}

// renderJob is nomad_job with hcl2 { vars = vars }: the provider hands each var to the
// jobspec parser like `nomad job run -var k=v` — verbatim for string variables, as an HCL
// expression for the others. Nomad's own parse endpoint does the rest.
func renderJob(t *testing.T, file string, vars cty.Value) *nomadapi.Job {
	t.Helper()
	types := map[string]cty.Type{}
	for _, b := range parseFile(t, file).Blocks {
		if b.Type == "variable" {
			ty, diags := typeexpr.TypeConstraint(b.Body.Attributes["type"].Expr)
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			types[b.Labels[0]] = ty
		}
	}
	var varFile bytes.Buffer
	names := make([]string, 0)
	for name := range vars.AsValueMap() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := vars.GetAttr(name).AsString()
		ty, ok := types[name]
		if !ok {
			t.Fatalf("%s declares no variable %q", file, name)
		}
		if ty == cty.String {
			s = hclString(s)
		}
		fmt.Fprintf(&varFile, "%s = %s\n", name, s)
	}
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	job, err := cluster.Nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{
		JobHCL: string(src), Variables: varFile.String(), Canonicalize: true,
	})
	if err != nil {
		t.Fatalf("nomad parse %s: %v\nvars:\n%s", file, err, varFile.String())
	}
	return job
}

// hclString quotes s as an HCL string literal that evaluates to s.
func hclString(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}

// consulToken creates the policy (rules from the module's file) and a token holding it,
// and returns the token's secret.
func consulToken(t *testing.T, name, rulesFile string) string {
	t.Helper()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	acl := cluster.Consul.ACL()
	p, _, err := acl.PolicyCreate(&consulapi.ACLPolicy{Name: name, Rules: string(rules)}, nil)
	if err != nil {
		t.Fatalf("consul policy %s: %v", name, err)
	}
	tok, _, err := acl.TokenCreate(&consulapi.ACLToken{Description: name, Policies: []*consulapi.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatalf("consul token %s: %v", name, err)
	}
	return tok.SecretID
}

// --- Polling -------------------------------------------------------------------------------

// allocsRunning is nil once exactly n of the job's allocations run.
func allocsRunning(ns, job string, n int) error {
	allocs, _, err := cluster.Nomad.Jobs().Allocations(job, false, &nomadapi.QueryOptions{Namespace: ns})
	if err != nil {
		return err
	}
	running, states := 0, []string{}
	for _, a := range allocs {
		if a.ClientStatus == "running" {
			running++
		}
		states = append(states, a.ClientStatus)
	}
	if running != n {
		return fmt.Errorf("allocations %v", states)
	}
	return nil
}

// passing is nil once exactly n instances of service pass their checks.
func passing(service string, n int) error {
	es, _, err := cluster.Consul.Health().Service(service, "", true, nil)
	if err != nil {
		return err
	}
	if len(es) != n {
		return fmt.Errorf("%d passing", len(es))
	}
	return nil
}

// dumpTaskLogs prints the tail of every task's stderr and stdout of a job, for failures.
func dumpTaskLogs(t *testing.T, ns, job string) {
	allocs, _, err := cluster.Nomad.Jobs().Allocations(job, true, &nomadapi.QueryOptions{Namespace: ns})
	if err != nil {
		t.Logf("logs of %s: %v", job, err)
		return
	}
	for _, stub := range allocs {
		alloc, _, err := cluster.Nomad.Allocations().Info(stub.ID, &nomadapi.QueryOptions{Namespace: ns})
		if err != nil {
			continue
		}
		for task, st := range stub.TaskStates {
			var events []string
			for _, e := range st.Events {
				events = append(events, e.Type+": "+e.DisplayMessage)
			}
			t.Logf("----- %s alloc %s task %s: %s; events: %s", job, stub.ID[:8], task, st.State, strings.Join(events, " | "))
			for _, stream := range []string{"stderr", "stdout"} {
				r, err := cluster.Nomad.AllocFS().Cat(alloc, "alloc/logs/"+task+"."+stream+".0", nil)
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(r)
				r.Close()
				if len(b) > 4096 {
					b = b[len(b)-4096:]
				}
				t.Logf("%s:\n%s", stream, b)
			}
		}
	}
}

// TestJobspecVariants renders the module's other shapes — gateway as a service job, docker
// driver, node classes, more namespaces — has Nomad validate the jobs and checks what they
// will run. The test host has no Docker daemon, so these are validated, not run (Nomad's
// validation does not check the docker config block's keys).
func TestJobspecVariants(t *testing.T) {
	mod := evalModule(t, map[string]cty.Value{
		"domain":             cty.StringVal("apps.example.com"),
		"image":              cty.StringVal("ghcr.io/acme/rouse:v0.1.0"),
		"gateway_mode":       cty.StringVal("service"),
		"gateway_count":      cty.NumberIntVal(3),
		"gateway_node_class": cty.StringVal("edge"),
		"scaler_count":       cty.NumberIntVal(3),
		"scaler_node_class":  cty.StringVal("ops"),
		"managed_namespaces": cty.ListVal([]cty.Value{cty.StringVal("default"), cty.StringVal("team-a")}),
	})
	gw := renderJob(t, "gateway.nomad.hcl", mod.locals["gateway_vars"])
	sc := renderJob(t, "scaler.nomad.hcl", mod.locals["scaler_vars"])
	for _, job := range []*nomadapi.Job{gw, sc} {
		resp, _, err := cluster.Nomad.Jobs().Validate(job, nil)
		if err != nil {
			t.Fatalf("validate %s: %v", *job.ID, err)
		}
		if resp.Error != "" || len(resp.ValidationErrors) > 0 {
			t.Errorf("%s is invalid: %s %v", *job.ID, resp.Error, resp.ValidationErrors)
		}
	}

	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	gtask, stask := gw.TaskGroups[0].Tasks[0], sc.TaskGroups[0].Tasks[0]
	check("gateway type", *gw.Type, "service")
	check("gateway count", *gw.TaskGroups[0].Count, 3)
	check("gateway constraint", gw.Constraints[0].LTarget+" "+gw.Constraints[0].RTarget, "${node.class} edge")
	check("gateway driver", gtask.Driver, "docker")
	check("gateway image", gtask.Config["image"], "ghcr.io/acme/rouse:v0.1.0")
	check("gateway network_mode", gtask.Config["network_mode"], "host")
	check("gateway args", gtask.Config["args"], "[gateway --listen 0.0.0.0:80 --admin-listen ${NOMAD_ADDR_admin} --domain apps.example.com --log-level info]")
	check("gateway has no raw_exec command", gtask.Config["command"], nil)
	check("scaler count", *sc.TaskGroups[0].Count, 3)
	check("scaler constraint", sc.Constraints[0].RTarget, "ops")
	check("scaler driver", stask.Driver, "docker")
	check("scaler args", stask.Config["args"], "[scaler --admin-listen ${NOMAD_ADDR_admin} --namespaces default,team-a --id ${NOMAD_ALLOC_ID} --log-level info]")
	check("scaler NOMAD_ADDR", stask.Env["NOMAD_ADDR"], "unix://${NOMAD_SECRETS_DIR}/api.sock")
	check("scaler identity in env", stask.Identity != nil && stask.Identity.Env, true)
	for _, task := range []*nomadapi.Task{gtask, stask} {
		if len(task.Templates) != 1 || !strings.Contains(*task.Templates[0].EmbeddedTmpl, `nomadVar "nomad/jobs/`) || !*task.Templates[0].Envvars {
			t.Errorf("task %s does not take its Consul token from its Nomad Variable", task.Name)
		}
		if _, ok := task.Env["CONSUL_HTTP_TOKEN"]; ok {
			t.Errorf("task %s has a Consul token in its jobspec", task.Name)
		}
	}

	// The jobspecs' own validations reject what the module's do.
	src, err := os.ReadFile("scaler.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: string(src), Variables: "instances = 1\n"}); err == nil || !strings.Contains(err.Error(), "at least 2") {
		t.Errorf("a single scaler must be refused, got %v", err)
	}
}
