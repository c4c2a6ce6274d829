package control

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/rouse-run/rouse/jobspec"
)

// checkVariables refuses, before anything is registered, a new revision whose templates
// read Nomad Variables it could not get: a path outside the service's own prefix
// (nomad/jobs/<service>; Parse already refuses it, this covers a hand-built Spec), or a
// variable read with nomadVar that does not exist. Nomad would not fail such a task: its
// template would wait for the variable and the instance would stay pending until --wait
// ran out. Only the variables' metadata is listed; rouse never reads their values.
func (c *Client) checkVariables(ctx context.Context, s *jobspec.Spec) error {
	refs := s.TemplateVariables()
	if len(refs) == 0 {
		return nil
	}
	ns, prefix := s.Namespace, jobspec.VariablePrefix(s.Name)
	var diags hcl.Diagnostics
	exists := map[string]bool{}
	for _, r := range refs {
		at := s.RangeOf(fmt.Sprintf("template[%d].data", r.Template))
		if r.Path != prefix && !strings.HasPrefix(r.Path, prefix+"/") {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError, Summary: "Variable not readable by the revision",
				Detail: fmt.Sprintf("The template reads Nomad Variable %q, outside %s/, the only variables a revision of service %q may read.",
					r.Path, prefix, s.Name),
				Subject: at.Ptr(),
			})
			continue
		}
		if !r.Exact {
			continue
		}
		found, seen := exists[r.Path]
		if !seen {
			metas, _, err := c.nomad.Variables().PrefixList(r.Path, c.qo(ctx, ns))
			if err != nil {
				return c.nomadErr(err, "variables list ("+prefix+"*)", ns)
			}
			for _, m := range metas {
				found = found || m.Path == r.Path
			}
			exists[r.Path] = found
		}
		if !found {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError, Summary: "Missing Nomad Variable",
				Detail: fmt.Sprintf("The template reads Nomad Variable %q with nomadVar, and it does not exist in namespace %s: "+
					"Nomad would wait for it, and the instance would stay pending. Write it first "+
					"(nomad var put -namespace %s %s key=value), or test for it with nomadVarExists. Nothing was registered. "+
					"(With Nomad ACLs, a variable this token may not list looks missing too: apply needs variables list on %s*.)",
					r.Path, ns, ns, r.Path, prefix),
				Subject: at.Ptr(),
			})
		}
	}
	if diags.HasErrors() {
		return diags
	}
	return nil
}
