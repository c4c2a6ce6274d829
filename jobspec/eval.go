package jobspec

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// functions is the function table of a spec: Nomad jobspec's pure functions that
// go-cty's stdlib provides, plus env(). lookupEnv is injected so tests control it.
func functions(lookupEnv func(string) (string, bool)) map[string]function.Function {
	return map[string]function.Function{
		"abs":             stdlib.AbsoluteFunc,
		"can":             tryfunc.CanFunc,
		"ceil":            stdlib.CeilFunc,
		"chomp":           stdlib.ChompFunc,
		"chunklist":       stdlib.ChunklistFunc,
		"coalesce":        stdlib.CoalesceFunc,
		"coalescelist":    stdlib.CoalesceListFunc,
		"compact":         stdlib.CompactFunc,
		"concat":          stdlib.ConcatFunc,
		"contains":        stdlib.ContainsFunc,
		"convert":         typeexpr.ConvertFunc,
		"csvdecode":       stdlib.CSVDecodeFunc,
		"distinct":        stdlib.DistinctFunc,
		"element":         stdlib.ElementFunc,
		"env":             envFunc(lookupEnv),
		"flatten":         stdlib.FlattenFunc,
		"floor":           stdlib.FloorFunc,
		"format":          stdlib.FormatFunc,
		"formatdate":      stdlib.FormatDateFunc,
		"formatlist":      stdlib.FormatListFunc,
		"indent":          stdlib.IndentFunc,
		"index":           stdlib.IndexFunc,
		"join":            stdlib.JoinFunc,
		"jsondecode":      stdlib.JSONDecodeFunc,
		"jsonencode":      stdlib.JSONEncodeFunc,
		"keys":            stdlib.KeysFunc,
		"length":          stdlib.LengthFunc,
		"log":             stdlib.LogFunc,
		"lookup":          stdlib.LookupFunc,
		"lower":           stdlib.LowerFunc,
		"max":             stdlib.MaxFunc,
		"merge":           stdlib.MergeFunc,
		"min":             stdlib.MinFunc,
		"parseint":        stdlib.ParseIntFunc,
		"pow":             stdlib.PowFunc,
		"range":           stdlib.RangeFunc,
		"regex":           stdlib.RegexFunc,
		"regexall":        stdlib.RegexAllFunc,
		"regex_replace":   stdlib.RegexReplaceFunc,
		"replace":         stdlib.ReplaceFunc,
		"reverse":         stdlib.ReverseListFunc,
		"setintersection": stdlib.SetIntersectionFunc,
		"setproduct":      stdlib.SetProductFunc,
		"setunion":        stdlib.SetUnionFunc,
		"signum":          stdlib.SignumFunc,
		"slice":           stdlib.SliceFunc,
		"sort":            stdlib.SortFunc,
		"split":           stdlib.SplitFunc,
		"strlen":          stdlib.StrlenFunc,
		"strrev":          stdlib.ReverseFunc,
		"substr":          stdlib.SubstrFunc,
		"timeadd":         stdlib.TimeAddFunc,
		"title":           stdlib.TitleFunc,
		"trim":            stdlib.TrimFunc,
		"trimprefix":      stdlib.TrimPrefixFunc,
		"trimspace":       stdlib.TrimSpaceFunc,
		"trimsuffix":      stdlib.TrimSuffixFunc,
		"try":             tryfunc.TryFunc,
		"upper":           stdlib.UpperFunc,
		"values":          stdlib.ValuesFunc,
		"zipmap":          stdlib.ZipmapFunc,
	}
}

// envFunc is env("NAME"): the variable's value in rouse's own environment, "" when unset.
func envFunc(lookupEnv func(string) (string, bool)) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the value of an environment variable of the rouse process, or an empty string.",
		Params:      []function.Parameter{{Name: "name", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			v, _ := lookupEnv(args[0].AsString())
			return cty.StringVal(v), nil
		},
	})
}

// scope evaluates expressions: var.*, local.*, the functions, and Nomad runtime references.
type scope struct {
	funcs  map[string]function.Function
	vars   map[string]cty.Value // nil: var.* not available (variable defaults)
	locals map[string]cty.Value // nil: local.* not available
}

func (s *scope) evalContext() *hcl.EvalContext {
	ctx := &hcl.EvalContext{Functions: s.funcs, Variables: map[string]cty.Value{}}
	if s.vars != nil {
		ctx.Variables["var"] = cty.ObjectVal(s.vars)
	}
	if s.locals != nil {
		ctx.Variables["local"] = cty.ObjectVal(s.locals)
	}
	return ctx
}

// eval evaluates expr. A value that is unknown (an error already reported) comes back as
// cty.DynamicVal with the error diagnostics.
func (s *scope) eval(expr hcl.Expression) (cty.Value, hcl.Diagnostics) {
	if diags := s.undeclared(expr); diags.HasErrors() {
		return cty.DynamicVal, diags
	}
	ctx := s.evalContext()
	rt, diags := runtimeRefs(expr)
	for k, v := range rt {
		ctx.Variables[k] = v
	}
	if diags.HasErrors() {
		return cty.DynamicVal, diags
	}
	v, more := expr.Value(ctx)
	return v, append(diags, more...)
}

// isRuntimeRoot reports whether a variable root is one of Nomad's runtime interpolations
// (${node.class}, ${attr.kernel.name}, ${meta.rack}, ${NOMAD_PORT_http}, ${HOME}) that the
// Nomad client resolves on the node, not rouse. Anything else undefined stays an error, so
// a typo like `vars.image` is caught here rather than shipped as a literal.
func isRuntimeRoot(name string) bool {
	switch name {
	case "node", "attr", "meta":
		return true
	}
	if strings.HasPrefix(name, "NOMAD_") {
		return true
	}
	for _, r := range name {
		if (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return name != "" && name[0] >= 'A' && name[0] <= 'Z'
}

// rtNode is one step of a runtime reference path: a leaf holds the literal text.
type rtNode struct {
	leaf   string
	isLeaf bool
	kids   map[string]*rtNode
	rng    hcl.Range
}

// runtimeRefs builds values for the Nomad runtime references expr makes, each evaluating to
// its own "${...}" text, so `attribute = "${node.class}"` keeps its meaning as in Nomad's
// jobspec (whose patched HCL does the same with an undefined-variable hook).
func runtimeRefs(expr hcl.Expression) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	roots := map[string]*rtNode{}
	for _, t := range expr.Variables() {
		root := t.RootName()
		if !isRuntimeRoot(root) {
			continue
		}
		path := []string{root}
		for _, step := range t[1:] {
			k, ok := stepKey(step)
			if !ok {
				break
			}
			path = append(path, k)
		}
		text := "${" + strings.Join(path, ".") + "}"
		if roots[root] == nil {
			roots[root] = &rtNode{}
		}
		n := roots[root]
		for _, k := range path[1:] {
			if n.kids == nil {
				n.kids = map[string]*rtNode{}
			}
			if n.kids[k] == nil {
				n.kids[k] = &rtNode{}
			}
			n = n.kids[k]
		}
		n.isLeaf, n.leaf, n.rng = true, text, t.SourceRange()
	}
	out := make(map[string]cty.Value, len(roots))
	for name, n := range roots {
		v, d := n.value()
		diags = append(diags, d...)
		out[name] = v
	}
	return out, diags
}

func stepKey(step hcl.Traverser) (string, bool) {
	switch s := step.(type) {
	case hcl.TraverseAttr:
		return s.Name, true
	case hcl.TraverseIndex:
		k := s.Key
		if !k.IsKnown() || k.IsNull() {
			return "", false
		}
		switch k.Type() {
		case cty.String:
			return k.AsString(), true
		case cty.Number:
			return k.AsBigFloat().Text('f', -1), true
		}
	}
	return "", false
}

func (n *rtNode) value() (cty.Value, hcl.Diagnostics) {
	if n.isLeaf && len(n.kids) > 0 {
		return cty.DynamicVal, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Ambiguous Nomad runtime reference",
			Detail: fmt.Sprintf("%s is used both as a value and as an object in one expression. "+
				"Escape the interpolation as $%s to pass it to Nomad literally.", n.leaf, n.leaf),
			Subject: n.rng.Ptr(),
		}}
	}
	if n.isLeaf {
		return cty.StringVal(n.leaf), nil
	}
	names := make([]string, 0, len(n.kids))
	for k := range n.kids {
		names = append(names, k)
	}
	sort.Strings(names)
	attrs := make(map[string]cty.Value, len(names))
	var diags hcl.Diagnostics
	for _, k := range names {
		v, d := n.kids[k].value()
		diags = append(diags, d...)
		attrs[k] = v
	}
	return cty.ObjectVal(attrs), diags
}

// undeclared reports var.x and local.x references to names never declared, in words a
// user can act on (HCL alone says "This object does not have an attribute named x").
func (s *scope) undeclared(expr hcl.Expression) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, t := range expr.Variables() {
		var known map[string]cty.Value
		switch t.RootName() {
		case "var":
			known = s.vars
		case "local":
			known = s.locals
		default:
			continue
		}
		if known == nil || len(t) < 2 {
			continue // HCL's own message ("no variable named var") fits
		}
		a, ok := t[1].(hcl.TraverseAttr)
		if !ok {
			continue
		}
		if _, ok := known[a.Name]; ok {
			continue
		}
		d := &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Undeclared variable",
			Detail:   fmt.Sprintf("var.%s is not declared; add a block variable %q { } to the spec.", a.Name, a.Name),
			Subject:  t.SourceRange().Ptr(),
		}
		if t.RootName() == "local" {
			d.Summary = "Undeclared local value"
			d.Detail = fmt.Sprintf("local.%s is not defined in any locals block.", a.Name)
		}
		diags = append(diags, d)
	}
	return diags
}
