package jobspec

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// Parse reads a service spec split over one or more files (name → contents; names ending
// in .json are HCL's JSON syntax) with -var values (name → raw string). Errors come back as
// diagnostics with source ranges, as many as can be found at once; the Spec is nil when
// there is any error, and may come with warnings.
func Parse(files map[string][]byte, vars map[string]string) (*Spec, hcl.Diagnostics) {
	s, _, diags := parse(files, vars, os.LookupEnv)
	return s, diags
}

// ParseFiles reads the spec from paths: files, or directories whose *.hcl and *.hcl.json
// files are read in name order. The returned map (filename → parsed file) is what
// hcl.NewDiagnosticTextWriter needs to print source snippets.
func ParseFiles(paths []string, vars map[string]string) (*Spec, map[string]*hcl.File, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	srcs := map[string][]byte{}
	read := func(name string) {
		b, err := os.ReadFile(name)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Failed to read file",
				Detail:   err.Error(),
			})
			return
		}
		srcs[name] = b
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Failed to read file", Detail: err.Error()})
			continue
		}
		if !fi.IsDir() {
			read(filepath.Clean(p))
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Failed to read directory", Detail: err.Error()})
			continue
		}
		found := false
		for _, e := range entries { // ReadDir sorts by name
			n := e.Name()
			if e.IsDir() || !(strings.HasSuffix(n, ".hcl") || strings.HasSuffix(n, ".hcl.json")) {
				continue
			}
			found = true
			read(filepath.Join(p, n))
		}
		if !found {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "No spec files",
				Detail:   fmt.Sprintf("Directory %s has no *.hcl or *.hcl.json files.", p),
			})
		}
	}
	if diags.HasErrors() {
		return nil, nil, diags
	}
	s, files, more := parse(srcs, vars, os.LookupEnv)
	return s, files, append(diags, more...)
}

// parse is Parse with the environment injected; it also returns the parsed files.
func parse(srcs map[string][]byte, vars map[string]string, lookupEnv func(string) (string, bool)) (*Spec, map[string]*hcl.File, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	if len(srcs) == 0 {
		return nil, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "No spec files",
			Detail:   "A service spec needs at least one file.",
		}}
	}
	names := make([]string, 0, len(srcs))
	for n := range srcs {
		names = append(names, n)
	}
	sort.Strings(names)
	p := hclparse.NewParser()
	var files []*hcl.File
	for _, n := range names {
		var f *hcl.File
		var d hcl.Diagnostics
		if strings.HasSuffix(n, ".json") {
			f, d = p.ParseJSON(srcs[n], n)
		} else {
			f, d = p.ParseHCL(srcs[n], n)
		}
		diags = append(diags, d...)
		if f != nil {
			files = append(files, f)
		}
	}
	// A syntax error leaves a partial body; decoding it would bury the real error under
	// follow-on ones (a missing service block, unset variables).
	if diags.HasErrors() {
		return nil, p.Files(), diags
	}

	content, d := hcl.MergeFiles(files).Content(&hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "variable", LabelNames: []string{"name"}},
			{Type: "locals"},
			{Type: "service", LabelNames: []string{"name"}},
		},
	})
	diags = append(diags, d...)

	sc := &scope{funcs: functions(lookupEnv)}
	values, d := inputVariables(content.Blocks, vars, sc, lookupEnv)
	diags = append(diags, d...)
	sc.vars = values
	sc.locals, d = localValues(content.Blocks, sc)
	diags = append(diags, d...)

	var svc *hcl.Block
	for _, b := range content.Blocks {
		if b.Type != "service" {
			continue
		}
		if svc != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate service block",
				Detail:   fmt.Sprintf("A spec describes one service; another service block is at %s.", svc.DefRange),
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		svc = b
	}
	if svc == nil {
		r := hcl.Range{Filename: names[0], Start: hcl.InitialPos, End: hcl.InitialPos}
		if len(files) > 0 && files[0].Body != nil {
			r = files[0].Body.MissingItemRange()
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing service block",
			Detail:   `A spec needs one block service "<name>" { ... }.`,
			Subject:  &r,
		})
		return nil, p.Files(), diags
	}
	s, d := decodeService(svc, sc)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, p.Files(), diags
	}
	return s, p.Files(), diags
}
