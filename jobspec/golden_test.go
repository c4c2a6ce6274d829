package jobspec

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// A test flag is the one package-level variable: `go test ./jobspec/ -update` rewrites
// the golden files.
var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// example is one spec under testdata: a file (*.hcl, *.hcl.json) or a directory of files.
type example struct {
	name string // golden file stem
	path string // file or directory
	vars map[string]string
	env  map[string]string
}

// examples lists testdata. Lines "# test: -var k=v" and "# test: env K=V" in a file set
// the -var values and environment it is parsed with.
func examples(t testing.TB) []example {
	t.Helper()
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var out []example
	for _, e := range entries {
		n := e.Name()
		p := filepath.Join("testdata", n)
		switch {
		case e.IsDir():
			out = append(out, example{name: n, path: p})
		case strings.HasSuffix(n, ".hcl"):
			out = append(out, example{name: strings.TrimSuffix(n, ".hcl"), path: p})
		case strings.HasSuffix(n, ".hcl.json"):
			out = append(out, example{name: strings.TrimSuffix(n, ".hcl.json") + "_json", path: p})
		default:
			continue
		}
		ex := &out[len(out)-1]
		ex.vars, ex.env = map[string]string{}, map[string]string{}
		if e.IsDir() {
			continue
		}
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(src), "\n") {
			d, ok := strings.CutPrefix(line, "# test: ")
			if !ok {
				continue
			}
			switch {
			case strings.HasPrefix(d, "-var "):
				k, v, _ := strings.Cut(strings.TrimPrefix(d, "-var "), "=")
				ex.vars[k] = v
			case strings.HasPrefix(d, "env "):
				k, v, _ := strings.Cut(strings.TrimPrefix(d, "env "), "=")
				ex.env[k] = v
			}
		}
	}
	return out
}

func (ex example) parse(t testing.TB) (*Spec, map[string]*hcl.File, hcl.Diagnostics) {
	t.Helper()
	srcs := map[string][]byte{}
	paths := []string{ex.path}
	if fi, err := os.Stat(ex.path); err == nil && fi.IsDir() {
		paths, _ = filepath.Glob(filepath.Join(ex.path, "*.hcl"))
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		srcs[p] = b
	}
	lookup := func(k string) (string, bool) { v, ok := ex.env[k]; return v, ok }
	return parse(srcs, ex.vars, lookup)
}

func TestGolden(t *testing.T) {
	exs := examples(t)
	if len(exs) < 5 {
		t.Fatalf("only %d examples in testdata", len(exs))
	}
	for _, ex := range exs {
		t.Run(ex.name, func(t *testing.T) {
			s, files, diags := ex.parse(t)
			if diags.HasErrors() {
				t.Fatal(diagText(files, diags))
			}
			if len(diags) > 0 {
				t.Errorf("unexpected warnings:\n%s", diagText(files, diags))
			}
			job, _, err := Compile(s, 1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(job, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", ex.name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./jobspec/ -run TestGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("compiled job differs from %s (run with -update and review the diff):\n%s", golden, lineDiff(string(want), string(got)))
			}
		})
	}
}

// TestParseFilesDirectory reads a directory the way the CLI does.
func TestParseFilesDirectory(t *testing.T) {
	s, files, diags := ParseFiles([]string{filepath.Join("testdata", "multi")}, nil)
	if diags.HasErrors() {
		t.Fatal(diagText(files, diags))
	}
	if s.Env["TARGET"] != "multi" || len(files) != 2 {
		t.Fatalf("env %v, %d files", s.Env, len(files))
	}
	_, _, diags = ParseFiles([]string{filepath.Join("testdata", "nope.hcl")}, nil)
	if !diags.HasErrors() || diags[0].Summary != "Failed to read file" {
		t.Fatalf("missing file: %v", diags)
	}
}

func diagText(files map[string]*hcl.File, diags hcl.Diagnostics) string {
	var b strings.Builder
	w := hcl.NewDiagnosticTextWriter(&b, files, 100, false)
	_ = w.WriteDiagnostics(diags)
	return b.String()
}

// lineDiff shows the first differing lines, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  - %s\n  + %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}
