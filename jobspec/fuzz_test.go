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
