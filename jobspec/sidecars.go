package jobspec

import (
	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"
)

// Sidecar is one `sidecar "<name>"` block: another task in the revision's group.
// (Being built: issue 20.)
type Sidecar struct{}

func (d *decoder) sidecars(blocks hcl.Blocks) {
	for _, b := range blocks {
		d.errorf(b.DefRange, "Unsupported block", "sidecar blocks are not supported yet.")
	}
}

func compileSidecars(s *Spec, group *nomadapi.TaskGroup) {}
