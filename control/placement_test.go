package control

import (
	"strings"
	"testing"

	nomadapi "github.com/hashicorp/nomad/api"
)

// A revision with a hard limit that Nomad cannot place for want of meta.rouse_bin says
// what the clients need; other reasons are as Nomad gives them.
func TestPlacementReasonNamesTheGuardsNeeds(t *testing.T) {
	got := placementReason(map[string]*nomadapi.AllocationMetric{"app": {
		NodesEvaluated:     2,
		ConstraintFiltered: map[string]int{"${meta.rouse_bin} is_set ": 2},
	}})
	for _, want := range []string{"2 node(s) evaluated", "constraint ${meta.rouse_bin} is_set  filtered 2 node(s)", "raw_exec", `meta { rouse_bin = "/path/to/rouse" }`} {
		if !strings.Contains(got, want) {
			t.Errorf("placement reason %q lacks %q", got, want)
		}
	}
	other := placementReason(map[string]*nomadapi.AllocationMetric{"app": {
		NodesEvaluated:     1,
		ConstraintFiltered: map[string]int{"${attr.kernel.name} = windows": 1},
	}})
	if strings.Contains(other, "rouse_bin") {
		t.Errorf("an unrelated constraint got the guard's hint: %q", other)
	}
}
