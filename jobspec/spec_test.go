package jobspec

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

func mustParse(t *testing.T, src string, vars, env map[string]string) *Spec {
	t.Helper()
	s, diags := parseOne(src, vars, env)
	if diags.HasErrors() {
		t.Fatal(diagText(nil, diags))
	}
	return s
}

const hashBase = `service "h" {
  image = "x:1"
  env   = { A = "1" }
  traffic {
    latest  = true
    percent = 100
  }
}
`

func TestTemplateHash(t *testing.T) {
	base := mustParse(t, hashBase, nil, nil).TemplateHash()
	if again := mustParse(t, hashBase, nil, nil).TemplateHash(); again != base {
		t.Fatalf("same spec, different hash: %s %s", base, again)
	}
	// Formatting, comments and spelling out defaults are not changes.
	same := []string{
		"# a comment\n" + strings.ReplaceAll(hashBase, "  ", "    "),
		strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  timeout = \"5m\"\n  namespace = \"default\"", 1),
		strings.Replace(hashBase, `image = "x:1"`, "image = format(\"x:%d\", 1)", 1),
	}
	for _, src := range same {
		if h := mustParse(t, src, nil, nil).TemplateHash(); h != base {
			t.Errorf("hash changed by a non-change:\n%s", src)
		}
	}
	// Traffic is not part of the template.
	traffic := strings.Replace(hashBase, "latest  = true", "revision = \"h-00001\"\n    tag = \"old\"", 1)
	if h := mustParse(t, traffic, nil, nil).TemplateHash(); h != base {
		t.Errorf("traffic change changed the hash")
	}
	// Everything else is.
	changed := map[string]string{
		"env":         strings.Replace(hashBase, `A = "1"`, `A = "2"`, 1),
		"env key":     strings.Replace(hashBase, `A = "1"`, `B = "1"`, 1),
		"image":       strings.Replace(hashBase, `x:1`, `x:2`, 1),
		"args":        strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  args = [\"-v\"]", 1),
		"timeout":     strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  timeout = \"10s\"", 1),
		"concurrency": strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  concurrency = 5", 1),
		"resources":   strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  resources {\n    memory = 64\n  }", 1),
		"autoscaling": strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  autoscaling {\n    max = 3\n  }", 1),
		"readiness":   strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  readiness {\n    path = \"/ready\"\n  }", 1),
		"constraint":  strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  constraint {\n    attribute = \"${node.class}\"\n    value = \"a\"\n  }", 1),
		"port":        strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  port = 9090", 1),
	}
	seen := map[string]string{base: "base"}
	for what, src := range changed {
		h := mustParse(t, src, nil, nil).TemplateHash()
		if prev, dup := seen[h]; dup {
			t.Errorf("%s change gives the same hash as %s", what, prev)
		}
		seen[h] = what
	}
}

// TestTemplateHashPinned pins the hash of one spec: if it changes, every service gets a
// new revision on the next apply after upgrading rouse. Change it only on purpose.
func TestTemplateHashPinned(t *testing.T) {
	const want = "57ee4caae3d10edf83970ec69c93ba9d"
	got := mustParse(t, hashBase, nil, nil).TemplateHash()
	if got != want {
		t.Errorf("TemplateHash of the pinned spec = %s, was %s: every revision would roll on upgrade", got, want)
	}
}

func TestVariables(t *testing.T) {
	src := `
variable "image" {
  type    = string
  default = "x:1"
}
variable "args" {
  type    = list(string)
  default = []
}
variable "max" {
  type    = number
  default = 1
}
variable "opts" {
  type    = object({ debug = bool, level = optional(string, "info") })
  default = { debug = false }
}
locals {
  level = var.opts.debug ? "debug" : var.opts.level
}
service "v" {
  image = var.image
  args  = concat(var.args, ["--level", local.level])
  env = {
    HOME_DIR = env("HOME_DIR")
    UNSET    = env("NOT_SET_ANYWHERE")
    ALLOC    = "${NOMAD_ALLOC_ID}"
    LITERAL  = "$${node.unique.name}"
    RACK     = meta.rack
  }
  autoscaling {
    max = var.max
  }
}
`
	env := map[string]string{"HOME_DIR": "/home/x", "ROUSE_VAR_max": "7", "ROUSE_VAR_image": "from-env"}
	s := mustParse(t, src, map[string]string{"image": "y:2", "args": `["-a", "-b"]`, "opts": `{ debug = true }`}, env)
	if s.Image != "y:2" {
		t.Errorf("image %q: -var must win over ROUSE_VAR_ and default", s.Image)
	}
	if want := []string{"-a", "-b", "--level", "debug"}; !reflect.DeepEqual(s.Args, want) {
		t.Errorf("args %q, want %q", s.Args, want)
	}
	if s.Autoscaling.Max != 7 {
		t.Errorf("max %d: ROUSE_VAR_max must win over the default", s.Autoscaling.Max)
	}
	wantEnv := map[string]string{
		"HOME_DIR": "/home/x", "UNSET": "", "ALLOC": "${NOMAD_ALLOC_ID}",
		"LITERAL": "${node.unique.name}", "RACK": "${meta.rack}",
	}
	if !reflect.DeepEqual(s.Env, wantEnv) {
		t.Errorf("env %v, want %v", s.Env, wantEnv)
	}
	s = mustParse(t, src, nil, nil)
	if s.Image != "x:1" || s.Autoscaling.Max != 1 || s.Args[1] != "info" {
		t.Errorf("defaults not used: %q %d %q", s.Image, s.Autoscaling.Max, s.Args)
	}
}

func TestDefaults(t *testing.T) {
	s := mustParse(t, `service "d" {
  command = "/bin/d"
}`, nil, nil)
	want := &Spec{
		Name: "d", Namespace: "default", Datacenters: []string{"*"}, Command: "/bin/d", Driver: "raw_exec",
		Protocol:  revmeta.ProtocolHTTP1,
		Resources: Resources{CPU: 100, MemoryMB: 300}, Timeout: 300 * time.Second,
		Readiness: Readiness{Type: "http", Path: "/", Interval: time.Second, Timeout: time.Second},
		Autoscaling: revmeta.Autoscaling{
			Metric: "concurrency", Target: 100, TargetUtilization: 0.7, Initial: 1, Window: time.Minute,
			PanicWindowPct: 10, PanicThresholdPct: 200, MaxScaleUpRate: 1000, MaxScaleDownRate: 2,
			ScaleToZeroGrace: 30 * time.Second, TargetBurstCapacity: 200,
		},
		Traffic: []store.TrafficTarget{{Latest: true, Percent: 100}},
	}
	got := *s
	got.DefRange, got.TrafficRanges, got.ranges = hcl.Range{}, nil, nil
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("defaults\n got %+v\nwant %+v", &got, want)
	}
	if len(s.TrafficRanges) != 1 || s.TrafficRanges[0] != s.DefRange {
		t.Errorf("default traffic range %v", s.TrafficRanges)
	}

	// Knative: with a hard limit, the concurrency target defaults to it; rps has its own.
	s = mustParse(t, "service \"d\" {\n  image = \"x\"\n  concurrency = 10\n}\n", nil, nil)
	if s.Autoscaling.Target != 10 || s.Port != 8080 || s.Driver != "docker" {
		t.Errorf("target %v port %d driver %s", s.Autoscaling.Target, s.Port, s.Driver)
	}
	s = mustParse(t, "service \"d\" {\n  image = \"x\"\n  autoscaling {\n    metric = \"rps\"\n  }\n}\n", nil, nil)
	if s.Autoscaling.Target != revmeta.DefaultRPSTarget {
		t.Errorf("rps target %v", s.Autoscaling.Target)
	}
}

func TestCompile(t *testing.T) {
	s := mustParse(t, `service "c" {
  command = "/bin/c"
  timeout = "45s"
  autoscaling {
    min     = 3
    initial = 1
  }
}`, nil, nil)
	job, cfg, err := Compile(s, 12)
	if err != nil {
		t.Fatal(err)
	}
	tg := job.TaskGroups[0]
	switch {
	case *job.ID != "c-00012" || *job.Name != "c-00012" || *job.Type != "service" || *job.Namespace != "default":
		t.Errorf("job id/name/type/ns: %s %s %s %s", *job.ID, *job.Name, *job.Type, *job.Namespace)
	case *tg.Name != revmeta.Group || *tg.Count != 3:
		t.Errorf("group %s count %d, want count = max(initial, min) = 3", *tg.Name, *tg.Count)
	case tg.Update == nil || tg.Update.MaxParallel == nil || *tg.Update.MaxParallel != 0:
		t.Errorf("update %+v: max_parallel must be explicitly 0", tg.Update)
	case tg.ShutdownDelay != nil || tg.Tasks[0].ShutdownDelay != ShutdownDelay || *tg.Tasks[0].KillTimeout != 45*time.Second:
		t.Errorf("group shutdown delay %v, task's %v, kill timeout %v: the delay belongs to the task, with its service", tg.ShutdownDelay, tg.Tasks[0].ShutdownDelay, *tg.Tasks[0].KillTimeout)
	case tg.Networks[0].DynamicPorts[0].Label != revmeta.PortLabel || tg.Networks[0].DynamicPorts[0].To != 0:
		t.Errorf("port %+v: raw_exec listens on the dynamic port itself", tg.Networks[0].DynamicPorts[0])
	case tg.Tasks[0].Env["PORT"] != "${NOMAD_PORT_http}" || tg.Tasks[0].Env["ROUSE_REVISION"] != "c-00012" || tg.Tasks[0].Env["ROUSE_SERVICE"] != "c":
		t.Errorf("env %v", tg.Tasks[0].Env)
	case tg.Tasks[0].Name != revmeta.Task || tg.Tasks[0].Driver != "raw_exec" || tg.Tasks[0].Config["command"] != "/bin/c":
		t.Errorf("task %+v", tg.Tasks[0])
	}
	if len(tg.Services) != 0 || len(tg.Tasks[0].Services) != 1 {
		t.Fatalf("%d group services, %d task services: the service belongs to the task (registered once it started)", len(tg.Services), len(tg.Tasks[0].Services))
	}
	svc := tg.Tasks[0].Services[0]
	if svc.Name != "c-00012" || svc.Provider != "consul" || svc.PortLabel != revmeta.PortLabel ||
		!reflect.DeepEqual(svc.Tags, []string{"rouse", "rouse.service=c", "rouse.namespace=default"}) ||
		svc.Meta[revmeta.MetaReadinessPath] != "/" {
		t.Errorf("service %+v", svc)
	}
	if c := svc.Checks[0]; c.Type != "http" || c.Path != "/" || c.Interval != time.Second || c.Timeout != time.Second {
		t.Errorf("check %+v", c)
	}
	if cfg.Revision != "c-00012" || cfg.Generation != 12 || cfg.SpecHash != s.TemplateHash() || cfg.Min != 3 || cfg.Timeout != 45*time.Second {
		t.Errorf("config %+v", cfg)
	}
	back, err := revmeta.FromMeta(job.Meta)
	if err != nil || !reflect.DeepEqual(back, cfg) {
		t.Errorf("job meta does not round-trip to the config: %v\n%+v\n%+v", err, back, cfg)
	}

	// Generations past 99999 still make DNS labels.
	if job, _, err := Compile(s, 123456); err != nil || *job.ID != "c-123456" {
		t.Errorf("gen 123456: %v", err)
	}
	s.RevisionName = "c-blue"
	if job, cfg, err := Compile(s, 2); err != nil || *job.ID != "c-blue" || cfg.Generation != 2 {
		t.Errorf("revision_name: %v", err)
	}
}

func TestCompileRejectsHandBuiltNonsense(t *testing.T) {
	for _, s := range []*Spec{
		nil,
		{},
		{Name: "a", Namespace: "default", Driver: "docker", Command: "/x", Timeout: time.Second, Readiness: Readiness{Type: "http"}},
		{Name: "a", Namespace: "default", Driver: "podman", Image: "x", Timeout: time.Second, Readiness: Readiness{Type: "http"}},
	} {
		if _, _, err := Compile(s, 1); err == nil {
			t.Errorf("Compile(%+v) succeeded", s)
		}
	}
	s := mustParse(t, "service \"a\" {\n  image = \"x\"\n}\n", nil, nil)
	if _, _, err := Compile(s, 0); err == nil {
		t.Error("generation 0 accepted")
	}
	s.Name = strings.Repeat("a", 60)
	if _, _, err := Compile(s, 1); err == nil {
		t.Error("64-character revision name accepted")
	}
}

func TestCheckTraffic(t *testing.T) {
	s := mustParse(t, `service "t" {
  image         = "x"
  revision_name = "t-green"
  traffic {
    revision = "t-00001"
    percent  = 50
  }
  traffic {
    revision = "t-00009"
    percent  = 20
  }
  traffic {
    revision = "t-green"
    percent  = 30
  }
}
`, nil, nil)
	diags := CheckTraffic(s, []string{"t-00002", "t-00001"})
	got := diagWants(diags, hcl.DiagError)
	if !sameWants(got, []want{{"Unknown revision", "9:16"}}) {
		t.Fatalf("got %v", got)
	}
	if !strings.Contains(diags[0].Detail, "t-00001, t-00002") {
		t.Errorf("detail does not list the revisions: %s", diags[0].Detail)
	}
	if d := CheckTraffic(s, []string{"t-00001", "t-00009"}); len(d) != 0 {
		t.Errorf("all exist, got %v", d)
	}
	if d := CheckTraffic(s, nil); len(d) != 2 {
		t.Errorf("none exist: want 2 errors, got %v", d)
	}
	// A hand-built spec without ranges still gets a diagnostic, at the traffic range.
	h := &Spec{Name: "t", Traffic: []store.TrafficTarget{{Revision: "t-00003", Percent: 100}}, TrafficRanges: []hcl.Range{{Filename: "x.hcl"}}}
	if d := CheckTraffic(h, nil); len(d) != 1 || d[0].Subject.Filename != "x.hcl" {
		t.Errorf("hand-built: %v", d)
	}
}

func TestRangeOf(t *testing.T) {
	s := mustParse(t, "service \"r\" {\n  image = \"x\"\n  env = {\n    A = \"1\"\n  }\n  autoscaling {\n    max = 2\n  }\n}\n", nil, nil)
	for path, want := range map[string]string{"image": "2:11", "env.A": "4:5", "autoscaling.max": "7:11", "timeout": "1:1", "name": "1:9"} {
		r := s.RangeOf(path)
		if got := fmt.Sprintf("%d:%d", r.Start.Line, r.Start.Column); r.Filename != "f.hcl" || got != want {
			t.Errorf("RangeOf(%s) = %v, want %s", path, r, want)
		}
	}
}

// TestParseMultipleFiles: blocks may be spread over files; duplicates across them are errors.
func TestParseMultipleFiles(t *testing.T) {
	files := map[string][]byte{
		"a.hcl": []byte("variable \"t\" {\n  default = \"x\"\n}\n"),
		"b.hcl": []byte("service \"m\" {\n  image = var.t\n}\n"),
	}
	s, diags := Parse(files, nil)
	if diags.HasErrors() || s.Image != "x" {
		t.Fatalf("%v %v", diags, s)
	}
	files["c.hcl"] = []byte("service \"n\" {\n  image = \"y\"\n}\n")
	_, diags = Parse(files, nil)
	if !sameWants(diagWants(diags, hcl.DiagError), []want{{"Duplicate service block", "c.hcl:1:1"}}) {
		t.Fatalf("got %v", diags)
	}
	if _, diags := Parse(nil, nil); !diags.HasErrors() {
		t.Fatal("no files accepted")
	}
	dir := t.TempDir()
	if _, _, diags := ParseFiles([]string{dir}, nil); !diags.HasErrors() || diags[0].Summary != "No spec files" {
		t.Fatalf("empty dir: %v", diags)
	}
	if err := os.WriteFile(filepath.Join(dir, "s.hcl"), files["b.hcl"], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, diags := ParseFiles([]string{dir}, nil); !sameWants(diagWants(diags, hcl.DiagError),
		[]want{{"Undeclared variable", filepath.Join(dir, "s.hcl") + ":2:11"}}) {
		t.Fatalf("dir: %v", diags)
	}
}

// TestCompileValidatesAutoscaling: a Spec built in Go without its autoscaling defaults used
// to compile into job meta of zeros (target_utilization "0"), which the scaler then read
// with kpa's own fallbacks. Compile validates the settings like everything else it checks.
func TestCompileValidatesAutoscaling(t *testing.T) {
	s := mustParse(t, "service \"a\" {\n  image = \"x\"\n}\n", nil, nil)
	if _, _, err := Compile(s, 1); err != nil {
		t.Fatalf("parsed spec: %v", err)
	}
	zero := *s
	zero.Autoscaling = revmeta.Autoscaling{}
	if job, _, err := Compile(&zero, 1); err == nil {
		t.Errorf("unresolved autoscaling compiled, meta %s=%q", revmeta.KeyTargetUtilization, job.Meta[revmeta.KeyTargetUtilization])
	}
	bad := *s
	bad.Autoscaling.TargetUtilization = 1.5
	if _, _, err := Compile(&bad, 1); err == nil || !strings.Contains(err.Error(), "target_utilization") {
		t.Errorf("target utilization 1.5: %v", err)
	}
}

// TestAutoscalingBoundsAgreeWithValidate: the decoder reports revmeta's bounds against the
// source, and Validate enforces them on every other way in; on each side of each bound the
// two agree, and what the spec says decodes to exactly the setting written in Go.
func TestAutoscalingBoundsAgreeWithValidate(t *testing.T) {
	type a = revmeta.Autoscaling
	for _, tc := range []struct {
		hcl string
		set func(*a)
	}{
		{`metric = "rps"`, func(x *a) { x.Metric, x.Target = "rps", revmeta.DefaultRPSTarget }},
		{`metric = "cpu"`, func(x *a) { x.Metric = "cpu" }},
		{"target = 0.01", func(x *a) { x.Target = 0.01 }},
		{"target = 0.009", func(x *a) { x.Target = 0.009 }},
		{"target_utilization_percentage = 1", func(x *a) { x.TargetUtilization = 0.01 }},
		{"target_utilization_percentage = 0.5", func(x *a) { x.TargetUtilization = 0.005 }},
		{"target_utilization_percentage = 100", func(x *a) { x.TargetUtilization = 1 }},
		{"target_utilization_percentage = 100.5", func(x *a) { x.TargetUtilization = 1.005 }},
		{"min = 100000", func(x *a) { x.Min = 100000 }},
		{"min = 100001", func(x *a) { x.Min = 100001 }},
		{"max = 100000", func(x *a) { x.Max = 100000 }},
		{"max = 100001", func(x *a) { x.Max = 100001 }},
		{"initial = 0", func(x *a) { x.Initial = 0 }},
		{"initial = 100001", func(x *a) { x.Initial = 100001 }},
		{"min = 2\n    max = 2", func(x *a) { x.Min, x.Max = 2, 2 }},
		{"min = 3\n    max = 2", func(x *a) { x.Min, x.Max, x.Initial = 3, 2, 1 }},
		{"initial = 3\n    max = 2", func(x *a) { x.Initial, x.Max = 3, 2 }},
		{`window = "6s"`, func(x *a) { x.Window = 6 * time.Second }},
		{`window = "5s"`, func(x *a) { x.Window = 5 * time.Second }},
		{`window = "1h"`, func(x *a) { x.Window = time.Hour }},
		{`window = "61m"`, func(x *a) { x.Window = 61 * time.Minute }},
		{"panic_window_percentage = 1", func(x *a) { x.PanicWindowPct = 1 }},
		{"panic_window_percentage = 0.9", func(x *a) { x.PanicWindowPct = 0.9 }},
		{"panic_window_percentage = 100", func(x *a) { x.PanicWindowPct = 100 }},
		{"panic_window_percentage = 101", func(x *a) { x.PanicWindowPct = 101 }},
		{"panic_threshold_percentage = 110", func(x *a) { x.PanicThresholdPct = 110 }},
		{"panic_threshold_percentage = 109", func(x *a) { x.PanicThresholdPct = 109 }},
		{"panic_threshold_percentage = 1000", func(x *a) { x.PanicThresholdPct = 1000 }},
		{"panic_threshold_percentage = 1001", func(x *a) { x.PanicThresholdPct = 1001 }},
		{"max_scale_up_rate = 1", func(x *a) { x.MaxScaleUpRate = 1 }},
		{"max_scale_up_rate = 1.01", func(x *a) { x.MaxScaleUpRate = 1.01 }},
		{"max_scale_down_rate = 1", func(x *a) { x.MaxScaleDownRate = 1 }},
		{"max_scale_down_rate = 1.01", func(x *a) { x.MaxScaleDownRate = 1.01 }},
		{`scale_to_zero_grace = "0s"`, func(x *a) { x.ScaleToZeroGrace = 0 }},
		{`scale_to_zero_grace = "1h"`, func(x *a) { x.ScaleToZeroGrace = time.Hour }},
		{`scale_to_zero_grace = "61m"`, func(x *a) { x.ScaleToZeroGrace = 61 * time.Minute }},
		{"target_burst_capacity = -1", func(x *a) { x.TargetBurstCapacity = -1 }},
		{"target_burst_capacity = -0.5", func(x *a) { x.TargetBurstCapacity = -0.5 }},
		{"target_burst_capacity = 0", func(x *a) { x.TargetBurstCapacity = 0 }},
	} {
		src := "service \"b\" {\n  image = \"x\"\n  autoscaling {\n    " + tc.hcl + "\n  }\n}\n"
		s, diags := parseOne(src, nil, nil)
		want := revmeta.DefaultAutoscaling()
		tc.set(&want)
		verr := want.Validate()
		switch {
		case diags.HasErrors() != (verr != nil):
			t.Errorf("%s: the decoder says %v, Validate says %v", tc.hcl, diags.Errs(), verr)
		case verr == nil && s.Autoscaling != want:
			t.Errorf("%s: decoded\n %+v\nwant\n %+v", tc.hcl, s.Autoscaling, want)
		}
	}
}

// network = "host" runs an image in the node's network, as a command runs: no port
// mapping, $PORT is the port Nomad assigns; bridge (the default) maps port and keeps the
// hashes of image specs written before network existed.
func TestImageNetwork(t *testing.T) {
	bridge := mustParse(t, "service \"n\" {\n  image = \"x@sha256:"+strings.Repeat("a", 64)+"\"\n}\n", nil, nil)
	host := mustParse(t, "service \"n\" {\n  image   = \"x@sha256:"+strings.Repeat("a", 64)+"\"\n  network = \"host\"\n}\n", nil, nil)
	if bridge.Network != NetworkBridge || bridge.Port != 8080 || host.Network != NetworkHost || host.Port != 0 {
		t.Fatalf("bridge %q port %d, host %q port %d", bridge.Network, bridge.Port, host.Network, host.Port)
	}
	if bridge.TemplateHash() == host.TemplateHash() {
		t.Error("network does not change the template hash")
	}
	unset := *bridge
	unset.Network = ""
	if unset.TemplateHash() != bridge.TemplateHash() {
		t.Error("the default network changed the hash of image specs written before it existed")
	}
	for name, s := range map[string]*Spec{"bridge": bridge, "host": host} {
		job, _, err := Compile(s, 1)
		if err != nil {
			t.Fatal(err)
		}
		task, port := job.TaskGroups[0].Tasks[0], job.TaskGroups[0].Networks[0].DynamicPorts[0]
		mode, ports := task.Config["network_mode"], task.Config["ports"]
		switch name {
		case "bridge":
			if mode != nil || port.To != 8080 || !reflect.DeepEqual(ports, []string{revmeta.PortLabel}) {
				t.Errorf("bridge: network_mode %v, port to %d, ports %v", mode, port.To, ports)
			}
		case "host":
			if mode != "host" || port.To != 0 || ports != nil {
				t.Errorf("host: network_mode %v, port to %d, ports %v", mode, port.To, ports)
			}
		}
	}
	for src, want := range map[string]string{
		"service \"n\" {\n  image   = \"x:1\"\n  network = \"overlay\"\n}\n":             `not "overlay"`,
		"service \"n\" {\n  image   = \"x:1\"\n  network = \"host\"\n  port = 9000\n}\n": "Unexpected port",
		"service \"n\" {\n  command = \"/x\"\n  network = \"host\"\n}\n":                 "Unexpected network",
	} {
		_, diags := parseOne(src, nil, nil)
		if !diags.HasErrors() || !strings.Contains(diagText(nil, diags), want) {
			t.Errorf("%q: %s, want an error with %q", src, diagText(nil, diags), want)
		}
	}
}
