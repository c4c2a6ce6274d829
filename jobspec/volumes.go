package jobspec

import (
	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"
)

// Volume is one `volume "<name>"` block: a host or CSI volume, or a scratch directory,
// mounted into the task. (Being built: issue 20.)
type Volume struct{}

func (d *decoder) volumes(blocks hcl.Blocks) {
	for _, b := range blocks {
		d.errorf(b.DefRange, "Unsupported block", "volume blocks are not supported yet.")
	}
}

func compileVolumes(s *Spec, group *nomadapi.TaskGroup, task *nomadapi.Task) {}
