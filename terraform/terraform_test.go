// Package terraform_test checks the Terraform modules without a terraform binary (none can
// be installed here): every HCL file parses and is canonically formatted, every variable
// is documented and typed, module calls and jobspec renderings pass exactly the inputs
// that exist, and the cloud-init template renders to configs the pinned agents accept.
//
// The module's jobspecs are run for real in modules/rouse (rouse_test).
package terraform_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"github.com/rouse-run/rouse/internal/harness/agents"
)

// hclFiles are the files under terraform/ written in HCL native syntax.
func hclFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".terraform" || strings.HasPrefix(d.Name(), ".")) && p != "." {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".tf") || strings.HasSuffix(p, ".hcl")) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 10 {
		t.Fatalf("found only %d HCL files under terraform/: %v", len(out), out)
	}
	return out
}

func parse(t *testing.T, path string) *hclsyntax.Body {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s", diags.Error())
	}
	return f.Body.(*hclsyntax.Body)
}

func TestHCLFilesParseAndAreFormatted(t *testing.T) {
	for _, p := range hclFiles(t) {
		t.Run(p, func(t *testing.T) {
			src, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, diags := hclsyntax.ParseConfig(src, p, hcl.InitialPos); diags.HasErrors() {
				t.Fatalf("does not parse:\n%s", diags.Error())
			}
			// hclwrite.Format is what `terraform fmt` applies to the token stream.
			if formatted := hclwrite.Format(src); !bytes.Equal(formatted, src) {
				t.Errorf("not formatted (terraform fmt would change it): %s", firstDiff(src, formatted))
			}
		})
	}
}

// firstDiff names the first line that formatting changes.
func firstDiff(have, want []byte) string {
	h, w := strings.Split(string(have), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(h) && i < len(w); i++ {
		if h[i] != w[i] {
			return fmt.Sprintf("line %d is\n\t%q\nwant\n\t%q", i+1, h[i], w[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(h), len(w))
}

func TestTemplatesParse(t *testing.T) {
	ps, _ := filepath.Glob("modules/*/*/*.tftpl")
	more, _ := filepath.Glob("modules/*/*.tftpl")
	ps = append(ps, more...)
	if len(ps) < 2 {
		t.Fatalf("templates: %v", ps)
	}
	for _, p := range ps {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, diags := hclsyntax.ParseTemplate(src, p, hcl.InitialPos); diags.HasErrors() {
			t.Errorf("%s", diags.Error())
		}
	}
}

// TestVariablesHaveDescriptionAndType covers the .tf inputs and the jobspecs' variables.
func TestVariablesHaveDescriptionAndType(t *testing.T) {
	n := 0
	for _, p := range hclFiles(t) {
		if !strings.HasSuffix(p, ".tf") && !strings.HasSuffix(p, ".nomad.hcl") {
			continue
		}
		for _, b := range parse(t, p).Blocks {
			if b.Type != "variable" {
				continue
			}
			n++
			where := fmt.Sprintf("%s: variable %q", p, b.Labels[0])
			d, ok := b.Body.Attributes["description"]
			if !ok {
				t.Errorf("%s has no description", where)
			} else if v, diags := d.Expr.Value(nil); diags.HasErrors() || v.Type() != cty.String || len(strings.TrimSpace(v.AsString())) < 10 {
				t.Errorf("%s: description must be a literal sentence", where)
			}
			ty, ok := b.Body.Attributes["type"]
			if !ok {
				t.Errorf("%s has no type", where)
				continue
			}
			if _, diags := typeexpr.TypeConstraint(ty.Expr); diags.HasErrors() {
				t.Errorf("%s: bad type: %s", where, diags.Error())
			}
		}
	}
	if n < 40 {
		t.Fatalf("only %d variables found; is the walk broken?", n)
	}
}

// module is what the checks need to know about one module directory.
type module struct {
	dir       string
	variables map[string]*hclsyntax.Block
	bodies    []*hclsyntax.Body
}

func loadModule(t *testing.T, dir string) *module {
	t.Helper()
	m := &module{dir: dir, variables: map[string]*hclsyntax.Block{}}
	ps, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	if len(ps) == 0 {
		t.Fatalf("no .tf files in %s", dir)
	}
	for _, p := range ps {
		body := parse(t, p)
		m.bodies = append(m.bodies, body)
		for _, b := range body.Blocks {
			if b.Type == "variable" {
				m.variables[b.Labels[0]] = b
			}
		}
	}
	return m
}

func (m *module) blocks(typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, body := range m.bodies {
		for _, b := range body.Blocks {
			if b.Type == typ {
				out = append(out, b)
			}
		}
	}
	return out
}

func (m *module) locals() map[string]*hclsyntax.Attribute {
	out := map[string]*hclsyntax.Attribute{}
	for _, b := range m.blocks("locals") {
		for n, a := range b.Body.Attributes {
			out[n] = a
		}
	}
	return out
}

// references returns the names under root (var, local) that the module's bodies use.
func (m *module) references(root string) map[string]hcl.Range {
	out := map[string]hcl.Range{}
	for _, body := range m.bodies {
		_ = hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			if e, ok := n.(*hclsyntax.ScopeTraversalExpr); ok && e.Traversal.RootName() == root && len(e.Traversal) > 1 {
				if a, ok := e.Traversal[1].(hcl.TraverseAttr); ok {
					out[a.Name] = e.SrcRange
				}
			}
			return nil
		})
	}
	return out
}

var modules = []string{"modules/rouse", "modules/cluster-aws", "examples/complete"}

// TestVariablesAreUsedAndDeclared is the part of `terraform validate` that catches typos:
// every var.x exists, every declared input is used somewhere.
func TestVariablesAreUsedAndDeclared(t *testing.T) {
	for _, dir := range modules {
		m := loadModule(t, dir)
		refs := m.references("var")
		for name, rng := range refs {
			if m.variables[name] == nil {
				t.Errorf("%s: var.%s is not declared", rng, name)
			}
		}
		for name, b := range m.variables {
			if _, ok := refs[name]; !ok {
				t.Errorf("%s: variable %q is never used", b.DefRange(), name)
			}
		}
		locals := m.locals()
		for name, rng := range m.references("local") {
			if locals[name] == nil {
				t.Errorf("%s: local.%s is not defined", rng, name)
			}
		}
	}
}

// TestModuleCallsMatchInputs checks each module block in the example against the
// called module's variables: no unknown argument, no missing required one.
func TestModuleCallsMatchInputs(t *testing.T) {
	ex := loadModule(t, "examples/complete")
	calls := ex.blocks("module")
	if len(calls) != 2 {
		t.Fatalf("examples/complete calls %d modules, want 2 (cluster and rouse)", len(calls))
	}
	for _, call := range calls {
		src, ok := call.Body.Attributes["source"]
		if !ok {
			t.Fatalf("module %q has no source", call.Labels[0])
		}
		v, _ := src.Expr.Value(nil)
		callee := loadModule(t, filepath.Join(ex.dir, v.AsString()))
		meta := map[string]bool{"source": true, "version": true, "providers": true, "depends_on": true, "count": true, "for_each": true}
		for name, a := range call.Body.Attributes {
			if !meta[name] && callee.variables[name] == nil {
				t.Errorf("%s: module %q has no input %q", a.SrcRange, call.Labels[0], name)
			}
		}
		for name, b := range callee.variables {
			if _, hasDefault := b.Body.Attributes["default"]; !hasDefault && call.Body.Attributes[name] == nil {
				t.Errorf("module %q: required input %q is not set", call.Labels[0], name)
			}
		}
	}
}

// objectKeys collects the keys of an object built from literals, merge() and locals.
func objectKeys(t *testing.T, e hclsyntax.Expression, locals map[string]*hclsyntax.Attribute) []string {
	t.Helper()
	switch e := e.(type) {
	case *hclsyntax.ObjectConsExpr:
		var keys []string
		for _, it := range e.Items {
			k, diags := it.KeyExpr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("%s: object key is not a literal", it.KeyExpr.Range())
			}
			keys = append(keys, k.AsString())
		}
		return keys
	case *hclsyntax.FunctionCallExpr:
		if e.Name != "merge" {
			t.Fatalf("%s: cannot follow %s()", e.Range(), e.Name)
		}
		var keys []string
		for _, a := range e.Args {
			keys = append(keys, objectKeys(t, a, locals)...)
		}
		return keys
	case *hclsyntax.ScopeTraversalExpr:
		if e.Traversal.RootName() == "local" {
			name := e.Traversal[1].(hcl.TraverseAttr).Name
			return objectKeys(t, locals[name].Expr, locals)
		}
	}
	t.Fatalf("%s: cannot list the keys of this expression", e.Range())
	return nil
}

// jobspecVariables returns each declared variable of a jobspec and whether it has a default.
func jobspecVariables(t *testing.T, path string) map[string]bool {
	out := map[string]bool{}
	for _, b := range parse(t, path).Blocks {
		if b.Type == "variable" {
			_, hasDefault := b.Body.Attributes["default"]
			out[b.Labels[0]] = hasDefault
		}
	}
	return out
}

// TestNomadJobVarsMatchJobspecs: nomad_job's hcl2 vars name only variables the jobspec
// declares (Nomad rejects unknown ones at apply) and give every one without a default.
func TestNomadJobVarsMatchJobspecs(t *testing.T) {
	m := loadModule(t, "modules/rouse")
	locals := m.locals()
	fileRE := regexp.MustCompile(`^file\("\$\{path\.module\}/([^"]+)"\)$`)
	jobs := 0
	for _, r := range m.blocks("resource") {
		if r.Labels[0] != "nomad_job" {
			continue
		}
		jobs++
		spec := r.Body.Attributes["jobspec"]
		src, _ := os.ReadFile(spec.SrcRange.Filename)
		expr := string(spec.Expr.Range().SliceBytes(src))
		match := fileRE.FindStringSubmatch(expr)
		if match == nil {
			t.Fatalf("%s: jobspec must be file(\"${path.module}/...\"), got %s", spec.SrcRange, expr)
		}
		declared := jobspecVariables(t, filepath.Join(m.dir, match[1]))
		var vars *hclsyntax.Attribute
		for _, b := range r.Body.Blocks {
			if b.Type == "hcl2" {
				vars = b.Body.Attributes["vars"]
			}
		}
		if vars == nil {
			t.Fatalf("nomad_job.%s has no hcl2 { vars }", r.Labels[1])
		}
		given := map[string]bool{}
		for _, k := range objectKeys(t, vars.Expr, locals) {
			if _, ok := declared[k]; !ok {
				t.Errorf("nomad_job.%s passes %q, which %s does not declare", r.Labels[1], k, match[1])
			}
			given[k] = true
		}
		for name, hasDefault := range declared {
			if !hasDefault && !given[name] {
				t.Errorf("nomad_job.%s does not set %q, which %s requires", r.Labels[1], name, match[1])
			}
		}
	}
	if jobs != 2 {
		t.Fatalf("found %d nomad_job resources, want 2", jobs)
	}
}

// TestCloudInitRendersValidAgentConfigs renders the cloud-init template the way
// templatefile() does (it is HCL template syntax) for both roles, then has the pinned
// Consul and Nomad binaries validate the configs it writes, and bash check the script.
func TestCloudInitRendersValidAgentConfigs(t *testing.T) {
	m := loadModule(t, "modules/cluster-aws")
	locals := m.locals()
	keys := objectKeys(t, locals["node_config_common"].Expr, locals)
	src, err := os.ReadFile("modules/cluster-aws/templates/cloud-init.yaml.tftpl")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, diags := hclsyntax.ParseTemplate(src, "cloud-init.yaml.tftpl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	bins, err := agents.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	const (
		rouseURL    = "https://github.com/rouse-run/rouse/releases/download/v0.1.0/rouse-linux-amd64"
		rouseSHA256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	)
	for _, c := range []struct {
		name, role string
		rouseURL   string // "" = a cluster without guard support (the default)
	}{
		{"server", "server", ""},
		{"client", "client", ""},
		{"client-with-rouse", "client", rouseURL},
	} {
		role := c.role
		t.Run(c.name, func(t *testing.T) {
			vars := map[string]cty.Value{}
			for _, k := range keys {
				vars[k] = cty.StringVal("sample-" + k)
			}
			// Values the agents check for shape.
			vars["role"] = cty.StringVal(role)
			vars["rouse_binary_url"] = cty.StringVal(c.rouseURL)
			vars["rouse_binary_sha256"] = cty.StringVal("")
			if c.rouseURL != "" {
				vars["rouse_binary_sha256"] = cty.StringVal(rouseSHA256)
			}
			vars["consul_gossip"] = cty.StringVal("pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=")
			vars["nomad_gossip"] = cty.StringVal("pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=")
			vars["agent_token"] = cty.StringVal("3f0e2f4b-7a31-4cf6-9d1e-6a0e3c4f5b21")
			vars["consul_mgmt"] = cty.StringVal("9b1d7c55-2d9a-4a5e-8d0b-3c2f1e6a7b80")
			vars["nomad_bootstrap"] = cty.StringVal("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9")
			out, diags := tmpl.Value(&hcl.EvalContext{Variables: vars})
			if diags.HasErrors() {
				t.Fatalf("render: %s", diags.Error())
			}
			rendered := out.AsString()
			if !strings.HasPrefix(rendered, "#cloud-config\n") {
				t.Fatal("rendered user data must start with #cloud-config")
			}
			files := writeFiles(t, rendered)
			for _, want := range []string{"/etc/consul.d/rouse.hcl", "/etc/nomad.d/rouse.hcl", "/etc/consul.d/agent-policy.rules", "/usr/local/sbin/rouse-node-setup"} {
				if _, ok := files[want]; !ok {
					t.Fatalf("cloud-init writes no %s; it writes %v", want, sortedKeys(files))
				}
			}
			for p, body := range files {
				if strings.HasSuffix(p, ".hcl") || strings.HasSuffix(p, ".rules") {
					if _, diags := hclsyntax.ParseConfig([]byte(body), p, hcl.InitialPos); diags.HasErrors() {
						t.Errorf("%s does not parse:\n%s\n%s", p, diags.Error(), body)
					}
				}
			}
			dir := t.TempDir()
			write := func(name, body string) string {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				return p
			}
			script := write("setup.sh", files["/usr/local/sbin/rouse-node-setup"])
			if b, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v\n%s", err, b)
			}
			for _, want := range []string{`"nomad=sample-nomad_version-1"`, `"consul=sample-consul_version-1"`, "apt-mark hold nomad consul"} {
				if !strings.Contains(files["/usr/local/sbin/rouse-node-setup"], want) {
					t.Errorf("setup script does not pin versions: missing %s", want)
				}
			}
			consulCfg := write("consul.hcl", files["/etc/consul.d/rouse.hcl"])
			if b, err := exec.Command(bins.Consul, "validate", "-quiet", consulCfg).CombinedOutput(); err != nil {
				t.Errorf("consul validate: %v\n%s\n%s", err, b, files["/etc/consul.d/rouse.hcl"])
			}
			nomadCfg := write("nomad.hcl", files["/etc/nomad.d/rouse.hcl"])
			if b, err := exec.Command(bins.Nomad, "config", "validate", nomadCfg).CombinedOutput(); err != nil {
				t.Errorf("nomad config validate: %v\n%s\n%s", err, b, files["/etc/nomad.d/rouse.hcl"])
			}

			// Guard support (revisions with a hard concurrency limit run `rouse guard` as a
			// raw_exec task of ${meta.rouse_bin}): on clients given a rouse binary, and only there.
			guard := c.rouseURL != ""
			rouseBin, rawExec := nomadGuardSupport(t, files["/etc/nomad.d/rouse.hcl"])
			if want := map[bool]string{true: "/usr/local/bin/rouse"}[guard]; rouseBin != want {
				t.Errorf("nomad client meta.rouse_bin = %q, want %q\n%s", rouseBin, want, files["/etc/nomad.d/rouse.hcl"])
			}
			if rawExec != guard {
				t.Errorf("raw_exec enabled = %v, want %v\n%s", rawExec, guard, files["/etc/nomad.d/rouse.hcl"])
			}
			setup := files["/usr/local/sbin/rouse-node-setup"]
			for _, want := range []string{
				`retry 24 curl -fsSL -o /usr/local/bin/rouse.download "` + rouseURL + `"`,
				`echo "` + rouseSHA256 + `  /usr/local/bin/rouse.download" | sha256sum -c --strict -`,
				"chmod 0755 /usr/local/bin/rouse.download",
				"mv -f /usr/local/bin/rouse.download /usr/local/bin/rouse",
			} {
				if strings.Contains(setup, want) != guard {
					t.Errorf("setup script has %q: %v, want %v", want, !guard, guard)
				}
			}
			if !guard && (strings.Contains(setup, "sha256sum") || strings.Contains(setup, "/usr/local/bin/rouse")) {
				t.Errorf("setup script installs rouse without a rouse_binary_url:\n%s", setup)
			}
			if guard {
				// The binary must be checked before anything can run it: installed only after
				// the check passes, and all of it before Nomad starts.
				check := strings.Index(setup, "sha256sum -c")
				install := strings.Index(setup, "mv -f /usr/local/bin/rouse.download")
				nomad := strings.Index(setup, "systemctl enable --now nomad")
				if !(check < install && install < nomad) {
					t.Errorf("setup script must check the sha256, then install rouse, then start Nomad:\n%s", setup)
				}
			}
		})
	}
}

// nomadGuardSupport reads what a Nomad agent config says about guard tasks: the client's
// meta.rouse_bin ("" if unset) and whether the raw_exec plugin is enabled.
func nomadGuardSupport(t *testing.T, cfg string) (rouseBin string, rawExec bool) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(cfg), "nomad.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	literal := func(a *hclsyntax.Attribute) cty.Value {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("%s: not a literal: %s", a.SrcRange, diags.Error())
		}
		return v
	}
	for _, b := range f.Body.(*hclsyntax.Body).Blocks {
		switch {
		case b.Type == "client":
			for _, m := range b.Body.Blocks {
				if a := m.Body.Attributes["rouse_bin"]; m.Type == "meta" && a != nil {
					rouseBin = literal(a).AsString()
				}
			}
		case b.Type == "plugin" && len(b.Labels) == 1 && b.Labels[0] == "raw_exec":
			for _, c := range b.Body.Blocks {
				if a := c.Body.Attributes["enabled"]; c.Type == "config" && a != nil {
					rawExec = literal(a).True()
				}
			}
		}
	}
	return rouseBin, rawExec
}

// TestRouseBinaryValidation evaluates the validation rules of cluster-aws's
// rouse_binary_url and rouse_binary_sha256 as `terraform plan` would (with Terraform's own
// can() and regex(), which are HCL's and cty's): the pair is set together or not at all,
// the checksum is sha256sum's lower-case hex, and the URL, pasted into the clients' setup
// script, holds nothing the shell would read.
func TestRouseBinaryValidation(t *testing.T) {
	m := loadModule(t, "modules/cluster-aws")
	type rule struct {
		variable         string
		condition, error hclsyntax.Expression
	}
	var rules []rule
	for _, name := range []string{"rouse_binary_url", "rouse_binary_sha256"} {
		b := m.variables[name]
		if b == nil {
			t.Fatalf("cluster-aws declares no %s", name)
		}
		if d, _ := b.Body.Attributes["default"].Expr.Value(nil); d != cty.StringVal("") {
			t.Errorf("%s: default %#v, want \"\" (no guard support unless asked for)", name, d)
		}
		for _, v := range b.Body.Blocks {
			if v.Type == "validation" {
				rules = append(rules, rule{name, v.Body.Attributes["condition"].Expr, v.Body.Attributes["error_message"].Expr})
			}
		}
	}
	if len(rules) < 3 {
		t.Fatalf("found %d validation rules on rouse_binary_url and rouse_binary_sha256", len(rules))
	}
	ctx := func(url, sum string) *hcl.EvalContext {
		return &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{
				"rouse_binary_url":    cty.StringVal(url),
				"rouse_binary_sha256": cty.StringVal(sum),
			})},
			Functions: map[string]function.Function{"can": tryfunc.CanFunc, "regex": stdlib.RegexFunc},
		}
	}
	const (
		url = "https://github.com/rouse-run/rouse/releases/download/v0.1.0/rouse-linux-arm64"
		sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	)
	for _, c := range []struct {
		name, url, sum string
		wantError      string // a part of the one error expected, "" = valid
	}{
		{"neither", "", "", ""},
		{"both", url, sum, ""},
		{"plain http (the checksum is what is trusted)", "http://mirror.internal:8080/rouse?v=0.1.0&arch=amd64", sum, ""},
		{"url without checksum", url, "", "rouse_binary_sha256 is not"},
		{"checksum without url", "", sum, "rouse_binary_url is not"},
		{"upper-case checksum", url, strings.ToUpper(sum), "64 lower-case hex digits"},
		{"short checksum", url, sum[:63], "64 lower-case hex digits"},
		{"checksum with its file name", url, sum + "  rouse", "64 lower-case hex digits"},
		{"not http", "ftp://example.com/rouse", sum, "http(s) URL"},
		{"no scheme", "example.com/rouse", sum, "http(s) URL"},
		{"command substitution", "https://example.com/$(reboot)", sum, "http(s) URL"},
		{"quote", `https://example.com/rouse"; reboot; "`, sum, "http(s) URL"},
		{"backtick", "https://example.com/`reboot`", sum, "http(s) URL"},
		{"space", "https://example.com/a b", sum, "http(s) URL"},
		{"newline", "https://example.com/rouse\nreboot", sum, "http(s) URL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var failed []string
			for _, r := range rules {
				ok, diags := r.condition.Value(ctx(c.url, c.sum))
				if diags.HasErrors() {
					t.Fatalf("%s: %s", r.condition.Range(), diags.Error())
				}
				if ok.True() {
					continue
				}
				msg, diags := r.error.Value(nil)
				if diags.HasErrors() {
					t.Fatalf("%s: error_message is not a literal", r.error.Range())
				}
				failed = append(failed, r.variable+": "+msg.AsString())
			}
			switch {
			case c.wantError == "" && len(failed) > 0:
				t.Errorf("url %q, sha256 %q rejected:\n%s", c.url, c.sum, strings.Join(failed, "\n"))
			case c.wantError != "" && (len(failed) != 1 || !strings.Contains(failed[0], c.wantError)):
				t.Errorf("url %q, sha256 %q: got errors\n%s\nwant exactly one containing %q", c.url, c.sum, strings.Join(failed, "\n"), c.wantError)
			}
		})
	}
}

// writeFiles extracts cloud-init's write_files entries (path + literal block content)
// from rendered user data; enough YAML for the one shape the template uses.
func writeFiles(t *testing.T, userData string) map[string]string {
	t.Helper()
	files := map[string]string{}
	lines := strings.Split(userData, "\n")
	path := ""
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "  - path: ") {
			path = strings.TrimPrefix(l, "  - path: ")
			continue
		}
		if path != "" && l == "    content: |" {
			var body []string
			for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], "      ") || lines[i+1] == "") {
				i++
				body = append(body, strings.TrimPrefix(lines[i], "      "))
			}
			files[path] = strings.TrimRight(strings.Join(body, "\n"), "\n") + "\n"
			path = ""
		}
	}
	if len(files) == 0 {
		t.Fatalf("no write_files found in:\n%s", userData)
	}
	return files
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestScalerNomadPolicyRenders: the template yields one namespace rule per managed
// namespace and nothing broader.
func TestScalerNomadPolicyRenders(t *testing.T) {
	src, err := os.ReadFile("modules/rouse/policies/scaler.nomad.hcl.tftpl")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, diags := hclsyntax.ParseTemplate(src, "scaler.nomad.hcl.tftpl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	out, diags := tmpl.Value(&hcl.EvalContext{Variables: map[string]cty.Value{
		"namespaces": cty.ListVal([]cty.Value{cty.StringVal("default"), cty.StringVal("apps")}),
	}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	f, diags := hclsyntax.ParseConfig([]byte(out.AsString()), "rendered", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s\n%s", diags.Error(), out.AsString())
	}
	var got []string
	for _, b := range f.Body.(*hclsyntax.Body).Blocks {
		caps, _ := b.Body.Attributes["capabilities"].Expr.Value(nil)
		got = append(got, fmt.Sprintf("%s %s %s", b.Type, b.Labels, caps.GoString()))
	}
	want := []string{
		`namespace [default] cty.TupleVal([]cty.Value{cty.StringVal("list-jobs"), cty.StringVal("read-job"), cty.StringVal("scale-job")})`,
		`namespace [apps] cty.TupleVal([]cty.Value{cty.StringVal("list-jobs"), cty.StringVal("read-job"), cty.StringVal("scale-job")})`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rendered policy:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestREADMEsListEveryInputAndOutput keeps the documented tables in step with the code.
func TestREADMEsListEveryInputAndOutput(t *testing.T) {
	docs := map[string][]string{
		"modules/rouse":       {"modules/rouse/README.md", "../docs/terraform.md"},
		"modules/cluster-aws": {"modules/cluster-aws/README.md"},
		"examples/complete":   {"examples/complete/README.md"},
	}
	for dir, readmes := range docs {
		m := loadModule(t, dir)
		var names []string
		for name := range m.variables {
			names = append(names, name)
		}
		for _, o := range m.blocks("output") {
			names = append(names, o.Labels[0])
		}
		for _, readme := range readmes {
			b, err := os.ReadFile(readme)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				if !bytes.Contains(b, []byte("| `"+name+"` |")) {
					t.Errorf("%s has no table row for %s's `%s`", readme, dir, name)
				}
			}
		}
	}
}
