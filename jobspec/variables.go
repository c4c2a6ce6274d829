package jobspec

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// EnvVarPrefix + a variable's name is the environment variable that sets it
// (ROUSE_VAR_image=...), as NOMAD_VAR_ does for Nomad. -var wins over it.
const EnvVarPrefix = "ROUSE_VAR_"

// inputVariable is one declared `variable` block.
type inputVariable struct {
	block    *hcl.Block
	typ      cty.Type
	defaults *typeexpr.Defaults
	typeRng  hcl.Range
	def      cty.Value
	hasDef   bool
	rules    []*hcl.Block
}

// inputVariables decodes the variable blocks and resolves each value: the -var value,
// else ROUSE_VAR_<name>, else the default.
func inputVariables(blocks hcl.Blocks, args map[string]string, sc *scope, lookupEnv func(string) (string, bool)) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	decl := map[string]*inputVariable{}
	var order []string
	for _, b := range blocks {
		if b.Type != "variable" {
			continue
		}
		name := b.Labels[0]
		if !hclsyntax.ValidIdentifier(name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid variable name",
				Detail:   "A variable name must start with a letter or underscore and contain only letters, digits, underscores and dashes.",
				Subject:  b.LabelRanges[0].Ptr(),
			})
			continue
		}
		if prev, ok := decl[name]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate variable",
				Detail:   fmt.Sprintf("Variable %q was already declared at %s.", name, prev.block.DefRange),
				Subject:  b.LabelRanges[0].Ptr(),
			})
			continue
		}
		v, d := declareVariable(b, sc)
		diags = append(diags, d...)
		decl[name] = v
		order = append(order, name)
	}

	argNames := make([]string, 0, len(args))
	for n := range args {
		argNames = append(argNames, n)
	}
	sort.Strings(argNames)
	for _, n := range argNames {
		if _, ok := decl[n]; !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Undeclared variable",
				Detail: fmt.Sprintf("A value was given for variable %q (-var %s=...), but the spec declares no such variable. "+
					"Add a block variable %q { } to use it.", n, n, n),
			})
		}
	}

	values := make(map[string]cty.Value, len(order))
	for _, n := range order {
		v := decl[n]
		var val cty.Value
		var d hcl.Diagnostics
		switch raw, fromArg := args[n]; {
		case fromArg:
			val, d = rawVariableValue(n, raw, "-var", v)
		default:
			if raw, ok := lookupEnv(EnvVarPrefix + n); ok {
				val, d = rawVariableValue(n, raw, "environment variable "+EnvVarPrefix+n, v)
			} else if v.hasDef {
				val = v.def
			} else {
				d = hcl.Diagnostics{{
					Severity: hcl.DiagError,
					Summary:  "Unset variable",
					Detail: fmt.Sprintf("Variable %q has no default; set it with -var %s=<value> or the environment variable %s%s.",
						n, n, EnvVarPrefix, n),
					Subject: v.block.DefRange.Ptr(),
				}}
			}
		}
		diags = append(diags, d...)
		if d.HasErrors() {
			val = cty.DynamicVal // references to it evaluate to unknown; the error is reported
		}
		values[n] = val
	}

	// Validation rules see every variable's final value.
	vsc := &scope{funcs: sc.funcs, vars: values}
	for _, n := range order {
		if !values[n].IsWhollyKnown() {
			continue
		}
		for _, rule := range decl[n].rules {
			diags = append(diags, checkRule(n, rule, vsc)...)
		}
	}
	return values, diags
}

func declareVariable(b *hcl.Block, sc *scope) (*inputVariable, hcl.Diagnostics) {
	v := &inputVariable{block: b, typ: cty.DynamicPseudoType, typeRng: b.DefRange}
	content, diags := b.Body.Content(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "default"}, {Name: "type"}, {Name: "description"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
	})
	for _, blk := range content.Blocks {
		v.rules = append(v.rules, blk)
	}
	if a, ok := content.Attributes["type"]; ok {
		ty, defaults, d := typeexpr.TypeConstraintWithDefaults(a.Expr)
		diags = append(diags, d...)
		if !d.HasErrors() {
			v.typ, v.defaults, v.typeRng = ty, defaults, a.Expr.Range()
		}
	}
	if a, ok := content.Attributes["description"]; ok {
		// Only checked for type: the text is for people reading the spec.
		val, d := sc.eval(a.Expr)
		diags = append(diags, d...)
		if !d.HasErrors() {
			if _, err := convert.Convert(val, cty.String); err != nil {
				diags = append(diags, typeError(a, err))
			}
		}
	}
	if a, ok := content.Attributes["default"]; ok {
		// Defaults are constants: functions and env() but no var.* or local.*. A bad
		// default is reported once, not again as "unset".
		v.def, v.hasDef = cty.DynamicVal, true
		val, d := sc.eval(a.Expr)
		diags = append(diags, d...)
		if !d.HasErrors() {
			if v.defaults != nil {
				val = v.defaults.Apply(val)
			}
			cv, err := convert.Convert(val, v.typ)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid default value for variable",
					Detail:   fmt.Sprintf("The default does not match the variable's type %s: %s.", typeexpr.TypeString(v.typ), err),
					Subject:  a.Expr.Range().Ptr(),
				})
			} else {
				v.def, v.hasDef = cv, true
			}
		}
	}
	return v, diags
}

// rawVariableValue converts a -var or environment string to the variable's type. As in
// Terraform and Nomad, a primitive type takes the string as is; a collection or object type
// parses it as an HCL expression (-var 'args=["-v"]').
func rawVariableValue(name, raw, from string, v *inputVariable) (cty.Value, hcl.Diagnostics) {
	var val cty.Value
	if v.typ.IsPrimitiveType() || v.typ == cty.DynamicPseudoType {
		val = cty.StringVal(raw)
	} else {
		fn := fmt.Sprintf("<value for var.%s>", name)
		expr, diags := hclsyntax.ParseExpression([]byte(raw), fn, hcl.InitialPos)
		if diags.HasErrors() {
			return cty.DynamicVal, diags
		}
		val, diags = expr.Value(nil)
		if diags.HasErrors() {
			return cty.DynamicVal, diags
		}
		if v.defaults != nil {
			val = v.defaults.Apply(val)
		}
	}
	cv, err := convert.Convert(val, v.typ)
	if err != nil {
		return cty.DynamicVal, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for variable",
			Detail: fmt.Sprintf("The value of variable %q from %s does not match its type %s: %s.",
				name, from, typeexpr.TypeString(v.typ), err),
			Subject: v.typeRng.Ptr(),
		}}
	}
	return cv, nil
}

func checkRule(name string, rule *hcl.Block, sc *scope) hcl.Diagnostics {
	content, diags := rule.Body.Content(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "condition", Required: true}, {Name: "error_message", Required: true}},
	})
	if diags.HasErrors() {
		return diags
	}
	cond, msg := content.Attributes["condition"], content.Attributes["error_message"]
	mv, d := sc.eval(msg.Expr)
	diags = append(diags, d...)
	text := ""
	if !d.HasErrors() {
		if s, err := convert.Convert(mv, cty.String); err != nil || s.IsNull() || !s.IsKnown() {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid error_message",
				Detail:   "error_message must be a string.",
				Subject:  msg.Expr.Range().Ptr(),
			})
		} else {
			text = s.AsString()
		}
	}
	cv, d := sc.eval(cond.Expr)
	diags = append(diags, d...)
	if d.HasErrors() {
		return diags
	}
	b, err := convert.Convert(cv, cty.Bool)
	if err != nil || b.IsNull() || !b.IsKnown() {
		return append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid validation condition",
			Detail:   "condition must be true or false.",
			Subject:  cond.Expr.Range().Ptr(),
		})
	}
	if b.False() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for variable",
			Detail:   fmt.Sprintf("var.%s: %s", name, text),
			Subject:  cond.Expr.Range().Ptr(),
			Context:  rule.DefRange.Ptr(),
		})
	}
	return diags
}

// localValues evaluates the locals blocks in dependency order. A local that failed is
// unknown to its dependents, so one mistake is reported once.
func localValues(blocks hcl.Blocks, sc *scope) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	exprs := map[string]*hcl.Attribute{}
	var order []string
	for _, b := range blocks {
		if b.Type != "locals" {
			continue
		}
		attrs, d := b.Body.JustAttributes()
		diags = append(diags, d...)
		names := make([]string, 0, len(attrs))
		for n := range attrs {
			names = append(names, n)
		}
		// Source order, so diagnostics come out as the user reads the file.
		sort.Slice(names, func(i, j int) bool {
			return attrs[names[i]].Range.Start.Byte < attrs[names[j]].Range.Start.Byte
		})
		for _, n := range names {
			if prev, ok := exprs[n]; ok {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Duplicate local value",
					Detail:   fmt.Sprintf("local.%s was already defined at %s.", n, prev.NameRange),
					Subject:  attrs[n].NameRange.Ptr(),
				})
				continue
			}
			exprs[n] = attrs[n]
			order = append(order, n)
		}
	}

	values := map[string]cty.Value{}
	lsc := &scope{funcs: sc.funcs, vars: sc.vars, locals: values}
	pending := order
	for len(pending) > 0 {
		var next []string
		for _, n := range pending {
			ready := true
			for _, dep := range localRefs(exprs[n].Expr) {
				if _, declared := exprs[dep]; !declared {
					continue // evaluating reports the unknown name
				}
				if _, done := values[dep]; !done {
					ready = false
				}
			}
			if !ready {
				next = append(next, n)
				continue
			}
			v, d := lsc.eval(exprs[n].Expr)
			diags = append(diags, d...)
			if d.HasErrors() {
				v = cty.DynamicVal
			}
			values[n] = v
		}
		if len(next) == len(pending) {
			for _, n := range next {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Circular reference in locals",
					Detail:   fmt.Sprintf("local.%s depends on itself through other locals.", n),
					Subject:  exprs[n].NameRange.Ptr(),
				})
				values[n] = cty.DynamicVal
			}
			break
		}
		pending = next
	}
	return values, diags
}

// localRefs lists the names of the locals expr refers to.
func localRefs(expr hcl.Expression) []string {
	var out []string
	for _, t := range expr.Variables() {
		if t.RootName() != "local" || len(t) < 2 {
			continue
		}
		if a, ok := t[1].(hcl.TraverseAttr); ok {
			out = append(out, a.Name)
		}
	}
	return out
}
