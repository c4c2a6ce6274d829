// Package jobspec reads rouse's HCL service spec, validates it with source-located
// diagnostics, and compiles one revision of it into an immutable Nomad job.
//
// The flow at apply: Parse (or ParseFiles) → Spec; Spec.TemplateHash decides whether a new
// revision is needed; Compile(spec, generation) → the revision's *nomadapi.Job and its
// revmeta.Config; CheckTraffic validates traffic against the revisions that exist.
package jobspec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// Spec is one service as the user declared it, with every default resolved, so the
// compiled job and the template hash depend only on the values here.
type Spec struct {
	Name         string   // service "<name>"
	Namespace    string   // Nomad namespace; default "default"
	RevisionName string   // explicit revision name; "" = <name>-<5-digit generation>
	Datacenters  []string // default ["*"]

	Image   string   // docker image; exactly one of Image and Command is set
	Driver  string   // "docker" for Image; "raw_exec" (default) or "exec" for Command
	Command string   // executable for raw_exec/exec
	Args    []string // arguments to Command, or to the image's entrypoint
	Port    int      // container port the app listens on (docker only; default 8080); 0 for commands
	Env     map[string]string

	Resources   Resources
	Concurrency int           // hard per-instance limit; 0 = unlimited
	Timeout     time.Duration // per request
	Readiness   Readiness
	Constraints []Constraint
	Autoscaling revmeta.Autoscaling // resolved: every default applied, valid

	// Traffic is the declared split; with no traffic block it is 100 % to the latest revision.
	Traffic []store.TrafficTarget
	// TrafficRanges[i] is where Traffic[i] was declared (the service block when defaulted),
	// so errors found at apply point at the source.
	TrafficRanges []hcl.Range

	// DefRange is the service block's header (`service "hello"`).
	DefRange hcl.Range
	// ranges maps a field path ("image", "autoscaling.min", "traffic[1].revision") to the
	// range of its value; see RangeOf.
	ranges map[string]hcl.Range
}

// Resources are Nomad task resources.
type Resources struct {
	CPU         int `json:"cpu"`                  // MHz
	MemoryMB    int `json:"memory"`               // MiB
	MemoryMaxMB int `json:"memory_max,omitempty"` // MiB; 0 = no oversubscription
}

// Readiness is the check Consul runs against each instance; the gateway only routes to
// instances whose check passes (and probes waking instances itself).
type Readiness struct {
	Type     string        `json:"type"`           // "http" or "tcp"
	Path     string        `json:"path,omitempty"` // for http; default "/"
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"`
}

// Constraint is a Nomad placement constraint.
type Constraint struct {
	Attribute string `json:"attribute,omitempty"`
	Operator  string `json:"operator"`
	Value     string `json:"value,omitempty"`
}

// RangeOf returns the source range of a field's value ("timeout", "autoscaling.max",
// "traffic[0].revision", "env.TARGET"), or the service block's header when the field was
// not written (defaulted) or the Spec was built by hand.
func (s *Spec) RangeOf(path string) hcl.Range {
	if r, ok := s.ranges[path]; ok {
		return r
	}
	return s.DefRange
}

// TemplateHash identifies the revision template: everything but traffic. Re-applying an
// unchanged spec yields the same hash (no new revision); any other change yields a new one.
func (s *Spec) TemplateHash() string {
	// An explicit view rather than the Spec itself: adding a field to Spec must not change
	// every existing hash (which would roll every service on upgrade). New fields go here
	// with omitempty, so their zero value keeps old hashes.
	v := struct {
		Name         string              `json:"name"`
		Namespace    string              `json:"namespace"`
		RevisionName string              `json:"revision_name,omitempty"`
		Datacenters  []string            `json:"datacenters,omitempty"`
		Image        string              `json:"image,omitempty"`
		Driver       string              `json:"driver,omitempty"`
		Command      string              `json:"command,omitempty"`
		Args         []string            `json:"args,omitempty"`
		Port         int                 `json:"port,omitempty"`
		Env          map[string]string   `json:"env,omitempty"`
		Resources    Resources           `json:"resources"`
		Concurrency  int                 `json:"concurrency,omitempty"`
		Timeout      time.Duration       `json:"timeout"`
		Readiness    Readiness           `json:"readiness"`
		Constraints  []Constraint        `json:"constraints,omitempty"`
		Autoscaling  revmeta.Autoscaling `json:"autoscaling"`
	}{
		s.Name, s.Namespace, s.RevisionName, s.Datacenters, s.Image, s.Driver, s.Command,
		s.Args, s.Port, s.Env, s.Resources, s.Concurrency, s.Timeout, s.Readiness,
		s.Constraints, s.Autoscaling,
	}
	b, err := json.Marshal(v)
	if err != nil {
		// Only a non-finite float in a hand-built Spec gets here (Parse rejects them);
		// %+v is deterministic too (fmt sorts map keys).
		b = fmt.Appendf(nil, "%+v", v)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
