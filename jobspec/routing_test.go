package jobspec

import (
	"fmt"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestRouting(t *testing.T) {
	base := "service \"a\" {\n  command = \"/bin/app\"\n%s}\n"
	parse := func(extra string) *Spec {
		t.Helper()
		s, diags := parseOne(fmt.Sprintf(base, extra), nil, nil)
		if diags.HasErrors() {
			t.Fatalf("%q: %s", extra, diags)
		}
		return s
	}
	def := parse("")
	if def.Visibility != "" || def.TagHeaderRouting {
		t.Fatalf("defaults: visibility %q, tag_header_routing %v", def.Visibility, def.TagHeaderRouting)
	}
	if s := parse("  visibility = \"public\"\n"); s.Visibility != "" {
		t.Fatalf("public: visibility %q, want \"\"", s.Visibility)
	}
	in := parse("  visibility = \"internal\"\n  tag_header_routing = true\n")
	if in.Visibility != VisibilityInternal || !in.TagHeaderRouting {
		t.Fatalf("internal: visibility %q, tag_header_routing %v", in.Visibility, in.TagHeaderRouting)
	}
	// Route-level: neither is part of the template, so neither rolls a revision.
	if def.TemplateHash() != in.TemplateHash() {
		t.Fatalf("visibility or tag_header_routing changed the template hash")
	}
}

func TestBadRouting(t *testing.T) {
	for _, c := range []struct {
		name, src string
		want      []want
	}{
		{"unknown visibility", "service \"a\" {\n  command = \"x\"\n  visibility = \"private\"\n}\n",
			[]want{{"Invalid visibility", "3:16"}}},
		{"visibility case matters", "service \"a\" {\n  command = \"x\"\n  visibility = \"Internal\"\n}\n",
			[]want{{"Invalid visibility", "3:16"}}},
		{"visibility not a string", "service \"a\" {\n  command = \"x\"\n  visibility = [\"internal\"]\n}\n",
			[]want{{"Incorrect attribute value type", "3:16"}}},
		{"tag_header_routing not a bool", "service \"a\" {\n  command = \"x\"\n  tag_header_routing = \"on\"\n}\n",
			[]want{{"Incorrect attribute value type", "3:24"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, diags := parseOne(c.src, nil, nil)
			if got := diagWants(diags, hcl.DiagError); !sameWants(got, c.want) {
				t.Fatalf("got %v, want %v\n%s", got, c.want, diags)
			}
		})
	}
}
