package jobspec

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// CheckTraffic validates the declared traffic against the service's revisions that exist
// (at apply). The revision this apply creates under an explicit revision_name counts as
// existing, so a spec may route to the revision it defines, as in Knative.
func CheckTraffic(s *Spec, existing []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for i, t := range s.Traffic {
		if t.Revision == "" || slices.Contains(existing, t.Revision) || t.Revision == s.RevisionName {
			continue
		}
		detail := fmt.Sprintf("Service %q has no revision %q.", s.Name, t.Revision)
		if len(existing) == 0 {
			detail += " It has no revisions yet: route to latest = true."
		} else {
			known := slices.Clone(existing)
			slices.Sort(known)
			detail += " Its revisions are: " + strings.Join(known, ", ") + "."
		}
		r := s.RangeOf(fmt.Sprintf("traffic[%d].revision", i))
		if _, ok := s.ranges[fmt.Sprintf("traffic[%d].revision", i)]; !ok && i < len(s.TrafficRanges) {
			r = s.TrafficRanges[i]
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Unknown revision",
			Detail:   detail,
			Subject:  r.Ptr(),
		})
	}
	return diags
}
