package jobspec

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// The lifecycles of a sidecar (Sidecar.Lifecycle), each one Nomad task lifecycle:
//
//	"prestart"  → hook prestart, sidecar = false: an init task that runs to completion
//	              before the main task starts (a failure fails the instance)
//	"sidecar"   → hook prestart, sidecar = true: starts before the main task and runs
//	              beside it for the instance's life (the default)
//	"poststart" → hook poststart, sidecar = true: starts once the main task has started
//	              and runs beside it
const (
	LifecyclePrestart  = "prestart"
	LifecycleSidecar   = "sidecar"
	LifecyclePoststart = "poststart"
)

// maxSidecars bounds the tasks of a group: only a surely mistaken spec has more.
const maxSidecars = 32

// Sidecar is one `sidecar "<name>"` block: another task in the revision's group, beside
// the main task (revmeta.Task), which alone serves the port and carries the Consul
// service. Like Spec, every default is resolved.
type Sidecar struct {
	Name      string `json:"name"`
	Lifecycle string `json:"lifecycle"`
	// Image or Command, as the main task's: exactly one is set.
	Image string `json:"image,omitempty"`
	// ResolveImage is resolve_image (default true with an image); as the main task's, not
	// in the hash itself: ImageDigest is.
	ResolveImage bool `json:"-"`
	// ImageDigest is the digest apply resolved Image's tag to ("" = Image runs as written).
	ImageDigest string            `json:"image_digest,omitempty"`
	Driver      string            `json:"driver"`
	Command     string            `json:"command,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Network     string            `json:"network,omitempty"` // image only: "" (docker's bridge) or "host"
	Env         map[string]string `json:"env,omitempty"`
	Resources   Resources         `json:"resources"`
}

// RunImage is the image reference the sidecar's task runs: Image pinned to ImageDigest
// when apply resolved it, else Image as written.
func (sc *Sidecar) RunImage() (string, error) {
	if sc.ImageDigest == "" {
		return sc.Image, nil
	}
	return PinImage(sc.Image, sc.ImageDigest)
}

func sidecarSchema() *hcl.BodySchema {
	return &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "image"}, {Name: "resolve_image"}, {Name: "command"}, {Name: "driver"}, {Name: "args"},
			{Name: "network"}, {Name: "env"}, {Name: "lifecycle"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "resources"}},
	}
}

func (d *decoder) sidecars(blocks hcl.Blocks) {
	seen := map[string]hcl.Range{}
	for i, blk := range blocks {
		name := blk.Labels[0]
		rng := blk.LabelRanges[0]
		switch msg := dnsLabel(name, true); {
		case msg != "":
			d.errorf(rng, "Invalid sidecar name", "Sidecar name %q %s; it names a Nomad task and its log files.", name, msg)
		case name == revmeta.Task:
			d.errorf(rng, "Invalid sidecar name",
				"%q is the name of the main task, the one that serves the port; name the sidecar after what it does.", name)
		case name == revmeta.GuardTask:
			d.errorf(rng, "Invalid sidecar name",
				"%q is reserved for rouse's concurrency guard, the task a revision with concurrency > 0 runs beside the main task; name the sidecar after what it does.", name)
		}
		if prev, dup := seen[name]; dup {
			d.errorf(rng, "Duplicate sidecar", "A sidecar named %q is already declared at %s.", name, prev)
		} else {
			seen[name] = rng
		}
		if i == maxSidecars {
			d.errorf(blk.DefRange, "Too many sidecars", "A revision may have at most %d sidecars.", maxSidecars)
		}

		c, diags := blk.Body.Content(sidecarSchema())
		d.diags = append(d.diags, diags...)
		prefix := fmt.Sprintf("sidecar.%s.", name)
		a := body{d: d, path: prefix, label: "sidecar.", attrs: c.Attributes}
		sc := Sidecar{Name: name, Lifecycle: LifecycleSidecar, Resources: Resources{CPU: defaultCPU, MemoryMB: defaultMemory}}
		d.sidecarWorkload(blk, a, &sc)
		d.envMap(a, &sc.Env, sidecarReservedEnv, "task")
		if a.str("lifecycle", &sc.Lifecycle) {
			switch sc.Lifecycle {
			case LifecyclePrestart, LifecycleSidecar, LifecyclePoststart:
			default:
				a.invalid("lifecycle", `lifecycle is %q (an init task that runs to completion before the main task starts), `+
					`%q (the default: starts before the main task and runs beside it) or %q (starts once the main task has started `+
					`and runs beside it), not %q.`, LifecyclePrestart, LifecycleSidecar, LifecyclePoststart, sc.Lifecycle)
			}
		}
		if b := d.singleBlock(c.Blocks, "resources"); b != nil {
			r := body{d: d, path: prefix + "resources.", label: "sidecar.resources.", attrs: d.content(b, attrSchema("cpu", "memory", "memory_max"))}
			r.int("cpu", &sc.Resources.CPU, 1, maxCPU)
			memOK := r.int("memory", &sc.Resources.MemoryMB, 10, maxMemory) || !r.has("memory")
			if r.int("memory_max", &sc.Resources.MemoryMaxMB, 10, maxMemory) && memOK && sc.Resources.MemoryMaxMB < sc.Resources.MemoryMB {
				r.invalid("memory_max", "memory_max (%d MiB) must be at least memory (%d MiB).", sc.Resources.MemoryMaxMB, sc.Resources.MemoryMB)
			}
		}
		d.spec.ranges[prefix[:len(prefix)-1]] = rng
		d.spec.Sidecars = append(d.spec.Sidecars, sc)
	}
}

// sidecarWorkload decodes what a sidecar runs, by the main task's rules: an image
// (docker) or a command (raw_exec/exec). It has no port: only the main task serves.
func (d *decoder) sidecarWorkload(blk *hcl.Block, a body, sc *Sidecar) {
	hasImage, hasCommand := a.has("image"), a.has("command")
	switch {
	case hasImage && hasCommand:
		d.errorf(a.rng("command"), "Conflicting image and command",
			"A sidecar runs either a container image (docker driver) or a command (raw_exec or exec driver), not both.")
	case !hasImage && !hasCommand:
		d.errorf(blk.DefRange, "Missing image or command",
			`Set image = "<registry/image:tag>" to run a container, or command = "<path>" to run a program with raw_exec or exec.`)
	}
	if a.str("image", &sc.Image) {
		switch {
		case strings.TrimSpace(sc.Image) == "":
			a.invalid("image", "image must not be empty.")
		case HasRuntimeReference(sc.Image):
		default:
			if _, err := ParseImage(sc.Image); err != nil {
				a.invalid("image", "%s. Write it as docker does: [registry[:port]/]repository[:tag] or …@sha256:<digest>.", err)
			}
		}
	}
	sc.ResolveImage = hasImage
	if a.bool("resolve_image", &sc.ResolveImage) && !hasImage {
		d.errorf(a.rng("resolve_image"), "Unexpected resolve_image",
			"resolve_image says whether apply pins an image's tag to its digest; a command has no image.")
		sc.ResolveImage = false
	}
	if a.str("command", &sc.Command) && strings.TrimSpace(sc.Command) == "" {
		a.invalid("command", "command must not be empty.")
	}
	a.strList("args", &sc.Args)
	if len(sc.Args) == 0 {
		sc.Args = nil
	}
	a.str("driver", &sc.Driver)
	switch {
	case hasImage && !hasCommand:
		if sc.Driver == "" {
			sc.Driver = "docker"
		}
		if sc.Driver != "docker" {
			a.invalid("driver", "An image runs with the docker driver, not %q; for raw_exec or exec use command instead of image.", sc.Driver)
		}
		if a.str("network", &sc.Network) {
			switch sc.Network {
			case NetworkBridge:
				sc.Network = "" // one spelling for the default
			case NetworkHost:
			default:
				a.invalid("network", `network is "bridge" (the default: the container's own network) or "host" (the node's network, `+
					`where a command's main task listens), not %q.`, sc.Network)
			}
		}
	case hasCommand && !hasImage:
		if sc.Driver == "" {
			sc.Driver = "raw_exec"
		}
		if sc.Driver != "raw_exec" && sc.Driver != "exec" {
			a.invalid("driver", `A command runs with driver "raw_exec" (the default) or "exec", not %q.`, sc.Driver)
		}
		if a.has("network") {
			d.errorf(a.rng("network"), "Unexpected network",
				"A command shares the node's network; network chooses an image's container network.")
		}
	}
}

// sidecarReservedEnv are set by rouse on every sidecar. PORT is not: it is the main
// task's, and a sidecar may set its own.
func sidecarReservedEnv(name string) bool { return name != "PORT" && reservedEnv(name) }

// compileSidecars adds one task per sidecar to the group, after the main task.
func compileSidecars(s *Spec, group *nomadapi.TaskGroup) error {
	rev := group.Tasks[0].Env["ROUSE_REVISION"] // the main task's, set by Compile
	seen := map[string]bool{}
	for i := range s.Sidecars {
		sc := &s.Sidecars[i]
		if err := checkSidecar(sc); err != nil {
			return fmt.Errorf("sidecar %q: %w", sc.Name, err)
		}
		if seen[sc.Name] {
			return fmt.Errorf("sidecar %q: declared twice", sc.Name)
		}
		seen[sc.Name] = true
		env := map[string]string{"ROUSE_SERVICE": s.Name, "ROUSE_REVISION": rev, "ROUSE_NAMESPACE": s.Namespace}
		for k, v := range sc.Env {
			if _, reserved := env[k]; !reserved {
				env[k] = v
			}
		}
		var config map[string]any
		if sc.Driver == "docker" {
			image, err := sc.RunImage()
			if err != nil {
				return fmt.Errorf("sidecar %q: image: %w", sc.Name, err)
			}
			config = map[string]any{"image": image}
			if sc.Network == NetworkHost {
				config["network_mode"] = NetworkHost
			}
		} else {
			config = map[string]any{"command": sc.Command}
		}
		if len(sc.Args) > 0 {
			config["args"] = append([]string(nil), sc.Args...)
		}
		hook, sidecar := nomadapi.TaskLifecycleHookPrestart, true
		switch sc.Lifecycle {
		case LifecyclePrestart:
			sidecar = false
		case LifecyclePoststart:
			hook = nomadapi.TaskLifecycleHookPoststart
		}
		group.Tasks = append(group.Tasks, &nomadapi.Task{
			Name:      sc.Name,
			Driver:    sc.Driver,
			Config:    config,
			Env:       env,
			Lifecycle: &nomadapi.TaskLifecycle{Hook: hook, Sidecar: sidecar},
			Resources: &nomadapi.Resources{
				CPU:         ptr(sc.Resources.CPU),
				MemoryMB:    ptr(sc.Resources.MemoryMB),
				MemoryMaxMB: optional(sc.Resources.MemoryMaxMB),
			},
		})
	}
	return nil
}

// checkSidecar rejects what Parse never produces (a hand-built Spec).
func checkSidecar(sc *Sidecar) error {
	switch {
	case dnsLabel(sc.Name, true) != "":
		return fmt.Errorf("name %s", dnsLabel(sc.Name, true))
	case sc.Name == revmeta.Task:
		return fmt.Errorf("the main task is named %q", revmeta.Task)
	case sc.Name == revmeta.GuardTask:
		return fmt.Errorf("%q is reserved for rouse's concurrency guard", revmeta.GuardTask)
	}
	switch sc.Lifecycle {
	case LifecyclePrestart, LifecycleSidecar, LifecyclePoststart:
	default:
		return fmt.Errorf("lifecycle %q", sc.Lifecycle)
	}
	switch sc.Driver {
	case "docker":
		if sc.Image == "" || sc.Command != "" {
			return fmt.Errorf("driver docker needs an image and no command")
		}
		if sc.Network != "" && sc.Network != NetworkHost && sc.Network != NetworkBridge {
			return fmt.Errorf("network %q", sc.Network)
		}
	case "raw_exec", "exec":
		if sc.Command == "" || sc.Image != "" {
			return fmt.Errorf("driver %s needs a command and no image", sc.Driver)
		}
	default:
		return fmt.Errorf("unsupported driver %q", sc.Driver)
	}
	return nil
}
