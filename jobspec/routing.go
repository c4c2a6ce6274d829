package jobspec

import "github.com/rouse-run/rouse/internal/store"

// Visibility values of the spec. Spec.Visibility is "" for public (the default: written
// or not, one spelling, as store.Service has it) and VisibilityInternal for internal.
const (
	VisibilityPublic   = "public"
	VisibilityInternal = store.VisibilityInternal
)

// routing decodes visibility and tag_header_routing: how the gateway serves the service,
// not what a revision runs, so neither is in the template hash and changing either is
// not a new revision.
func (d *decoder) routing(a body) {
	s := d.spec
	var v string
	if a.str("visibility", &v) {
		switch v {
		case VisibilityPublic:
			s.Visibility = ""
		case VisibilityInternal:
			s.Visibility = VisibilityInternal
		default:
			a.invalid("visibility", `visibility is %q (the default: served on the gateway's public listener) or %q (only on its internal listener, under the internal domain: Knative's cluster-local), not %q.`,
				VisibilityPublic, VisibilityInternal, v)
		}
	}
	a.bool("tag_header_routing", &s.TagHeaderRouting)
}
