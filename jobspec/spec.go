// Package jobspec reads rouse's HCL service spec, validates it with source-located
// diagnostics, and compiles one revision of it into an immutable Nomad job.
//
// The flow at apply: Parse (or ParseFiles) → Spec; control resolves an image's tag and
// records the digest in Spec.ImageDigest (this package never touches the network);
// Spec.TemplateHash decides whether a new revision is needed; Compile(spec, generation) →
// the revision's *nomadapi.Job (running the pinned image) and its revmeta.Config;
// CheckTraffic validates traffic against the revisions that exist.
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

	Image   string   // docker image as written; exactly one of Image and Command is set
	Driver  string   // "docker" for Image; "raw_exec" (default) or "exec" for Command
	Command string   // executable for raw_exec/exec
	Args    []string // arguments to Command, or to the image's entrypoint
	Port    int      // container port the app listens on (docker bridge only; default 8080); 0 otherwise
	// Network is the container's network (docker only): "bridge" (the default: its own
	// network namespace, Port mapped from a free port of the node) or "host" (the node's
	// network, as a command has: the app listens on $PORT). "" for commands.
	Network string
	// Protocol is how the gateway talks to the instances: revmeta.ProtocolHTTP1 (the
	// default) or revmeta.ProtocolH2C (HTTP/2 without TLS, prior knowledge: gRPC). ""
	// in a hand-built Spec is HTTP/1.1.
	Protocol string
	Env      map[string]string

	// ResolveImage is resolve_image (default true with an image): apply resolves Image's
	// tag to the digest it names, so the revision keeps running that content when the tag
	// moves.
	ResolveImage bool
	// ImageDigest is the digest ("sha256:…") apply resolved Image's tag to, part of the
	// template: the same tag on other content is another revision. "" = the revision runs
	// Image as written (it names a digest itself, or ResolveImage is off). Parse never sets
	// it; see RunImage.
	ImageDigest string

	Resources   Resources
	Concurrency int           // hard per-instance limit; 0 = unlimited
	Timeout     time.Duration // per request
	Readiness   Readiness
	Constraints []Constraint
	Autoscaling revmeta.Autoscaling // resolved: every default applied, valid

	// ResponseStartTimeout and IdleTimeout are Knative's two other request timeouts (see
	// timeouts.go); 0 = none beyond Timeout.
	ResponseStartTimeout time.Duration
	IdleTimeout          time.Duration
	// Templates, Volumes and Sidecars are the task's files and env from Nomad Variables,
	// the group's volumes and the extra tasks (templates.go, volumes.go, sidecars.go).
	Templates []Template
	Volumes   []Volume
	Sidecars  []Sidecar

	// Visibility and TagHeaderRouting are the route's, not the template's (routing.go):
	// changing them is not a new revision.
	Visibility       string
	TagHeaderRouting bool

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
	Type     string        `json:"type"`           // "http", "tcp" or "grpc" (only with protocol h2c)
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

// RunImage is the image reference the revision's task runs: Image pinned to ImageDigest
// when apply resolved it, else Image as written.
func (s *Spec) RunImage() (string, error) {
	if s.ImageDigest == "" {
		return s.Image, nil
	}
	return PinImage(s.Image, s.ImageDigest)
}

// The container networks of an image service (Spec.Network).
const (
	NetworkBridge = "bridge"
	NetworkHost   = "host"
)

// TemplateHash identifies the revision template: everything but traffic, and with the image
// digest apply resolved. Re-applying an unchanged spec whose tag still names the same
// content yields the same hash (no new revision); any other change yields a new one.
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
		ImageDigest  string              `json:"image_digest,omitempty"`
		Driver       string              `json:"driver,omitempty"`
		Command      string              `json:"command,omitempty"`
		Args         []string            `json:"args,omitempty"`
		Port         int                 `json:"port,omitempty"`
		Network      string              `json:"network,omitempty"`  // "" for the default, bridge
		Protocol     string              `json:"protocol,omitempty"` // "" for the default, http1
		Env          map[string]string   `json:"env,omitempty"`
		Resources    Resources           `json:"resources"`
		Concurrency  int                 `json:"concurrency,omitempty"`
		Timeout      time.Duration       `json:"timeout"`
		Readiness    Readiness           `json:"readiness"`
		Constraints  []Constraint        `json:"constraints,omitempty"`
		Autoscaling  revmeta.Autoscaling `json:"autoscaling"`

		ResponseStartTimeout time.Duration `json:"response_start_timeout,omitempty"`
		IdleTimeout          time.Duration `json:"idle_timeout,omitempty"`
		Templates            []Template    `json:"templates,omitempty"`
		Volumes              []Volume      `json:"volumes,omitempty"`
		Sidecars             []Sidecar     `json:"sidecars,omitempty"`
	}{
		s.Name, s.Namespace, s.RevisionName, s.Datacenters, s.Image, s.ImageDigest, s.Driver, s.Command,
		s.Args, s.Port, hashedNetwork(s.Network), hashedProtocol(s.Protocol), s.Env, s.Resources, s.Concurrency,
		s.Timeout, s.Readiness, s.Constraints, s.Autoscaling,
		s.ResponseStartTimeout, s.IdleTimeout, s.Templates, s.Volumes, s.Sidecars,
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

// hashedNetwork is Network as TemplateHash sees it: the default, bridge, as absent, so
// that image specs hashed before network existed keep their hashes.
func hashedNetwork(n string) string {
	if n == NetworkBridge {
		return ""
	}
	return n
}

// hashedProtocol is Protocol as TemplateHash sees it: the default, http1, as absent, so
// that specs hashed before protocol existed keep their hashes; only h2c is in the hash.
func hashedProtocol(p string) string {
	if p == revmeta.ProtocolHTTP1 {
		return ""
	}
	return p
}
