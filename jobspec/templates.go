package jobspec

import (
	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"
)

// Template is one `template` block: a file (or env) rendered by Nomad from Nomad
// Variables. (Being built: issue 20.)
type Template struct{}

func (d *decoder) templates(blocks hcl.Blocks) {
	for _, b := range blocks {
		d.errorf(b.DefRange, "Unsupported block", "template blocks are not supported yet.")
	}
}

func compileTemplates(s *Spec, task *nomadapi.Task) {}
