package jobspec

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: no input makes the parser panic, and whatever it accepts compiles.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "*.hcl*"))
	more, _ := filepath.Glob(filepath.Join("testdata", "*", "*.hcl"))
	for _, p := range append(paths, more...) {
		if filepath.Ext(p) == ".json" && filepath.Base(p) != "hello.hcl.json" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, filepath.Ext(p) == ".json")
	}
	for _, s := range []string{
		`service "a" { image = "x" }`,
		"service \"a\" {\n  env = { A = \"${node.class}${attr.a.b}\" }\n  command = \"x\"\n}\n",
		"locals {\n  a = local.b\n  b = 1\n}\nservice \"a\" {\n  command = local.a\n}\n",
		"variable \"v\" {\n  type = list(number)\n  default = [1]\n}\nservice \"a\" {\n  image = \"x\"\n  autoscaling {\n    max = var.v[0]\n  }\n}\n",
		"service \"a\" {\n  image = \"x\"\n  traffic {\n    latest = true\n    percent = 100\n    tag = \"t\"\n  }\n}\n",
		// routing.go
		"service \"a\" {\n  command = \"x\"\n  visibility = \"internal\"\n  tag_header_routing = true\n}\n",
		// timeouts.go
		"service \"a\" {\n  image = \"x\"\n  timeout = \"30s\"\n  response_start_timeout = \"10s\"\n  idle_timeout = \"31s\"\n}\n",
		// templates.go, volumes.go (testdata/templates.hcl and volumes.hcl are seeds too)
		"service \"a\" {\n  command = \"x\"\n  template {\n    destination = \"secrets/a.env\"\n    env = true\n    data = \"{{ with nomadVar \\\"nomad/jobs/a/db\\\" }}P={{ .p }}{{ end }}\"\n  }\n  template {\n    destination = \"local/b\"\n    change_mode = \"signal\"\n    change_signal = \"SIGHUP\"\n    data = \"{{ range nomadVarList `nomad/jobs/a` }}{{ end }}\"\n  }\n}\n",
		"service \"a\" {\n  image = \"x\"\n  volume \"h\" {\n    type = \"host\"\n    source = \"h\"\n    destination = \"/h\"\n    read_only = true\n  }\n  volume \"c\" {\n    type = \"csi\"\n    source = \"c\"\n    destination = \"/c\"\n    access_mode = \"multi-node-multi-writer\"\n  }\n  volume \"s\" {\n    type = \"scratch\"\n    destination = \"/s\"\n  }\n}\n",
		"service \"a\" {\n  image = \"x\"\n  sidecar \"s\" {\n    command = \"x\"\n    lifecycle = \"prestart\"\n    env = { A = \"1\" }\n    resources {\n      cpu = 1\n    }\n  }\n  sidecar \"t\" {\n    image = \"y@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n    network = \"host\"\n  }\n}\n",
		// the scale knobs (service.go's autoscaling)
		"service \"a\" {\n  image = \"x\"\n  autoscaling {\n    max = 5\n    scale_down_delay = \"2m\"\n    activation_scale = 3\n  }\n}\n",
	} {
		f.Add([]byte(s), false)
	}
	lookup := func(string) (string, bool) { return "", false }
	f.Fuzz(func(t *testing.T, src []byte, isJSON bool) {
		name := "f.hcl"
		if isJSON {
			name = "f.hcl.json"
		}
		s, _, diags := parse(map[string][]byte{name: src}, nil, lookup)
		for _, d := range diags {
			if d.Summary == "" {
				t.Fatalf("diagnostic without summary: %+v", d)
			}
		}
		if diags.HasErrors() {
			if s != nil {
				t.Fatal("spec returned with errors")
			}
			return
		}
		if _, _, err := Compile(s, 1); err != nil {
			t.Fatalf("parsed spec does not compile: %v\n%s", err, src)
		}
		_ = s.TemplateHash()
		_ = CheckTraffic(s, nil)
	})
}
