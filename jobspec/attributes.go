package jobspec

import (
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// decoder accumulates diagnostics while filling a Spec.
type decoder struct {
	sc    *scope
	spec  *Spec
	diags hcl.Diagnostics
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}

// body reads the attributes of one block. path prefixes the keys of Spec.ranges
// ("traffic[1]."); label prefixes field names in messages ("traffic.").
type body struct {
	d           *decoder
	path, label string
	attrs       hcl.Attributes
}

func (b body) has(name string) bool { _, ok := b.attrs[name]; return ok }

func (b body) rng(name string) hcl.Range {
	if a, ok := b.attrs[name]; ok {
		return a.Expr.Range()
	}
	return b.d.spec.DefRange
}

func (b body) rngOr(name string, r hcl.Range) hcl.Range {
	if a, ok := b.attrs[name]; ok {
		return a.Expr.Range()
	}
	return r
}

func (b body) invalid(name, format string, args ...any) {
	b.d.errorf(b.rng(name), "Invalid "+b.label+name, format, args...)
}

// value evaluates an attribute and converts it to ty. It reports false when the attribute
// is absent, null (HCL's "unset"), or wrong (already reported).
func (b body) value(name string, ty cty.Type) (cty.Value, bool) {
	a, ok := b.attrs[name]
	if !ok {
		return cty.NilVal, false
	}
	v, diags := b.d.sc.eval(a.Expr)
	b.d.diags = append(b.d.diags, diags...)
	if diags.HasErrors() || !v.IsWhollyKnown() || v.IsNull() {
		return cty.NilVal, false
	}
	b.d.spec.ranges[b.path+name] = a.Expr.Range()
	cv, err := convert.Convert(v, ty)
	if err != nil {
		b.d.diags = append(b.d.diags, typeError(a, err))
		return cty.NilVal, false
	}
	return cv, true
}

func typeError(a *hcl.Attribute, err error) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Incorrect attribute value type",
		Detail:   fmt.Sprintf("Inappropriate value for attribute %q: %s.", a.Name, err),
		Subject:  a.Expr.Range().Ptr(),
	}
}

func (b body) str(name string, dst *string) bool {
	v, ok := b.value(name, cty.String)
	if ok {
		*dst = v.AsString()
	}
	return ok
}

func (b body) bool(name string, dst *bool) bool {
	v, ok := b.value(name, cty.Bool)
	if ok {
		*dst = v.True()
	}
	return ok
}

// number reads a finite number; whole demands an integer.
func (b body) number(name string, whole bool) (*big.Float, bool) {
	v, ok := b.value(name, cty.Number)
	if !ok {
		return nil, false
	}
	f := v.AsBigFloat()
	if f.IsInf() {
		b.invalid(name, "%s must be a finite number.", name)
		return nil, false
	}
	if whole && !f.IsInt() {
		b.invalid(name, "%s must be a whole number, not %s.", name, f.Text('g', 10))
		return nil, false
	}
	return f, true
}

func (b body) int(name string, dst *int, lo, hi int) bool {
	f, ok := b.number(name, true)
	if !ok {
		return false
	}
	if f.Cmp(big.NewFloat(float64(lo))) < 0 || f.Cmp(big.NewFloat(float64(hi))) > 0 {
		b.invalid(name, "%s must be between %d and %d, not %s.", name, lo, hi, f.Text('g', 10))
		return false
	}
	i, _ := f.Int64()
	*dst = int(i)
	return true
}

// float reads a number within [lo, hi]; loOpen excludes lo itself.
func (b body) float(name string, dst *float64, lo, hi float64, loOpen bool) bool {
	f, ok := b.number(name, false)
	if !ok {
		return false
	}
	x, _ := f.Float64()
	if x < lo || x > hi || (loOpen && x == lo) {
		bound := fmt.Sprintf("at least %g", lo)
		if loOpen {
			bound = fmt.Sprintf("greater than %g", lo)
		}
		if hi < math.MaxFloat64 {
			bound += fmt.Sprintf(" and at most %g", hi)
		}
		b.invalid(name, "%s must be %s, not %s.", name, bound, f.Text('g', 10))
		return false
	}
	*dst = x
	return true
}

func (b body) duration(name string, dst *time.Duration, lo, hi time.Duration) bool {
	var s string
	if !b.str(name, &s) {
		return false
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		b.invalid(name, "%q is not a duration; write it like \"30s\", \"5m\" or \"1h30m\".", s)
		return false
	}
	if dur < lo || dur > hi {
		b.invalid(name, "%s must be between %s and %s, not %s.", name, lo, hi, dur)
		return false
	}
	*dst = dur
	return true
}

// strList reads a list of strings; null elements are rejected, not turned into "".
func (b body) strList(name string, dst *[]string) bool {
	v, ok := b.value(name, cty.List(cty.String))
	if !ok {
		return false
	}
	out := make([]string, 0, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			b.invalid(name, "%s must not contain null.", name)
			return false
		}
		out = append(out, e.AsString())
	}
	*dst = out
	return true
}

func (b body) strMap(name string, dst *map[string]string) bool {
	v, ok := b.value(name, cty.Map(cty.String))
	if !ok {
		return false
	}
	out := make(map[string]string, v.LengthInt())
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if e.IsNull() {
			b.invalid(name, "%s.%s must not be null.", name, k.AsString())
			return false
		}
		out[k.AsString()] = e.AsString()
	}
	*dst = out
	return true
}

// keyRange finds the range of one key of an object expression, to point at `env = { K = … }`
// entries; it falls back to the whole expression.
func (b body) keyRange(name, key string) hcl.Range {
	a, ok := b.attrs[name]
	if !ok {
		return b.d.spec.DefRange
	}
	if obj, ok := a.Expr.(*hclsyntax.ObjectConsExpr); ok {
		for _, item := range obj.Items {
			k, diags := b.d.sc.eval(item.KeyExpr)
			if diags.HasErrors() || !k.IsKnown() || k.IsNull() || k.Type() != cty.String {
				continue
			}
			if k.AsString() == key {
				return item.KeyExpr.Range()
			}
		}
	}
	return a.Expr.Range()
}

func attrSchema(names ...string) *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, n := range names {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: n})
	}
	return s
}

// singleBlock returns the only block of a type, reporting repeats.
func (d *decoder) singleBlock(blocks hcl.Blocks, typ string) *hcl.Block {
	var first *hcl.Block
	for _, b := range blocks {
		if b.Type != typ {
			continue
		}
		if first != nil {
			d.errorf(b.DefRange, "Duplicate "+typ+" block",
				"Only one %s block is allowed; the first is at %s.", typ, first.DefRange)
			continue
		}
		first = b
	}
	return first
}

func (d *decoder) content(b *hcl.Block, schema *hcl.BodySchema) hcl.Attributes {
	c, diags := b.Body.Content(schema)
	d.diags = append(d.diags, diags...)
	return c.Attributes
}
