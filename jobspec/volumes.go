package jobspec

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"
)

// Volume is one `volume "<name>"` block: a Nomad host or CSI volume mounted into the main
// task, or a scratch directory (an in-memory tmpfs of the container, gone with the
// instance).
type Volume struct {
	Name           string `json:"name"`
	Type           string `json:"type"`             // host, csi or scratch
	Source         string `json:"source,omitempty"` // the client's host_volume name, or the CSI volume ID
	Destination    string `json:"destination"`      // absolute path in the task
	ReadOnly       bool   `json:"read_only,omitempty"`
	AccessMode     string `json:"access_mode,omitempty"`     // csi
	AttachmentMode string `json:"attachment_mode,omitempty"` // csi
}

// Volume types.
const (
	VolumeHost    = "host"
	VolumeCSI     = "csi"
	VolumeScratch = "scratch"
)

// CSI modes, Nomad's.
var (
	csiAccessModes     = []string{"single-node-reader-only", "single-node-writer", "multi-node-reader-only", "multi-node-single-writer", "multi-node-multi-writer"}
	csiAttachmentModes = []string{"file-system", "block-device"}
)

func (d *decoder) volumes(blocks hcl.Blocks) {
	s := d.spec
	names := map[string]hcl.Range{}
	dests := map[string]hcl.Range{}
	for i, blk := range blocks {
		v := Volume{Name: blk.Labels[0]}
		b := body{d: d, path: fmt.Sprintf("volume[%d].", i), label: "volume.",
			attrs: d.content(blk, attrSchema("type", "source", "destination", "read_only", "access_mode", "attachment_mode"))}
		if msg := volumeName(v.Name); msg != "" {
			d.errorf(blk.LabelRanges[0], "Invalid volume name", "Volume name %q %s.", v.Name, msg)
		} else if prev, dup := names[v.Name]; dup {
			d.errorf(blk.LabelRanges[0], "Duplicate volume", "Volume %q is already declared at %s.", v.Name, prev)
		} else {
			names[v.Name] = blk.LabelRanges[0]
		}

		typed := b.str("type", &v.Type)
		if !typed && !b.has("type") {
			d.errorf(blk.DefRange, "Missing volume type",
				`A volume needs type: "host" (a host_volume of the Nomad client), "csi" (a CSI volume registered in Nomad) or "scratch" (an empty in-memory directory per instance).`)
		}
		switch v.Type {
		case VolumeHost, VolumeCSI, VolumeScratch, "":
		default:
			b.invalid("type", `type must be "host", "csi" or "scratch", not %q.`, v.Type)
			typed = false
		}

		if b.str("source", &v.Source) && strings.TrimSpace(v.Source) == "" {
			b.invalid("source", "source must not be empty.")
		}
		switch {
		case v.Type == VolumeScratch && b.has("source"):
			d.errorf(b.rng("source"), "Unexpected volume source", "A scratch volume is an empty directory of the instance; it has no source.")
		case (v.Type == VolumeHost || v.Type == VolumeCSI) && !b.has("source"):
			what := "the name of a host_volume in the Nomad client's configuration"
			if v.Type == VolumeCSI {
				what = "the ID of a CSI volume registered in Nomad"
			}
			d.errorf(blk.DefRange, "Missing volume source", "A %s volume needs source, %s.", v.Type, what)
		}

		if b.str("destination", &v.Destination) {
			switch {
			case !path.IsAbs(v.Destination):
				b.invalid("destination", "destination %q must be an absolute path in the task, such as \"/data\".", v.Destination)
			case path.Clean(v.Destination) == "/":
				b.invalid("destination", "destination must not be the task's root directory.")
			default:
				v.Destination = path.Clean(v.Destination)
				if prev, dup := dests[v.Destination]; dup {
					d.errorf(b.rng("destination"), "Duplicate volume destination",
						"Another volume is already mounted at %s (at %s).", v.Destination, prev)
				} else {
					dests[v.Destination] = b.rng("destination")
				}
			}
		} else if !b.has("destination") {
			d.errorf(blk.DefRange, "Missing volume destination", `A volume needs destination, where the task sees it, such as "/data".`)
		}

		if b.bool("read_only", &v.ReadOnly) && v.Type == VolumeScratch {
			d.errorf(b.rng("read_only"), "Unexpected volume read_only", "A scratch volume starts empty, so a read-only one could never hold anything.")
			v.ReadOnly = false
		}
		for _, n := range []string{"access_mode", "attachment_mode"} {
			if b.has(n) && typed && v.Type != VolumeCSI {
				d.errorf(b.rng(n), "Unexpected volume "+n, "%s is a CSI volume's; this volume is of type %q.", n, v.Type)
			}
		}
		if v.Type == VolumeCSI {
			v.AttachmentMode = "file-system"
			if b.str("attachment_mode", &v.AttachmentMode) && !slices.Contains(csiAttachmentModes, v.AttachmentMode) {
				b.invalid("attachment_mode", "attachment_mode must be one of %s, not %q.", strings.Join(csiAttachmentModes, ", "), v.AttachmentMode)
			}
			v.AccessMode = "single-node-writer"
			if v.ReadOnly {
				v.AccessMode = "multi-node-reader-only"
			}
			if b.str("access_mode", &v.AccessMode) {
				switch {
				case !slices.Contains(csiAccessModes, v.AccessMode):
					b.invalid("access_mode", "access_mode must be one of %s, not %q.", strings.Join(csiAccessModes, ", "), v.AccessMode)
				case !v.ReadOnly && strings.HasSuffix(v.AccessMode, "-reader-only"):
					b.invalid("access_mode", "access_mode %q cannot be mounted for writing; set read_only = true, or a writer mode.", v.AccessMode)
				}
			}
		}
		s.Volumes = append(s.Volumes, v)
	}
	if len(blocks) == 0 {
		return
	}
	// What the driver can mount: raw_exec has no filesystem isolation, and a scratch tmpfs
	// is a docker mount.
	for i, blk := range blocks {
		v := s.Volumes[i]
		switch {
		case s.Driver == "raw_exec":
			d.errorf(blk.DefRange, "Volume needs an isolating driver",
				`The raw_exec driver runs the command on the node's own filesystem and cannot mount volumes. Use driver = "exec" or an image.`)
			return
		case v.Type == VolumeScratch && s.Driver != "docker":
			d.errorf(blk.DefRange, "Scratch volume needs an image",
				"A scratch volume is a tmpfs mount of the container. A command's own ephemeral directory is local/ in its task directory ($NOMAD_TASK_DIR), removed with the instance.")
		}
	}
}

// volumeName: Nomad's volume names are free-form; rouse keeps them simple (they appear in
// the job as map keys and in messages).
func volumeName(n string) string {
	if n == "" {
		return "must not be empty"
	}
	for _, r := range n {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '_' {
			return "may contain only letters, digits, dashes and underscores"
		}
	}
	return ""
}

func compileVolumes(s *Spec, group *nomadapi.TaskGroup, task *nomadapi.Task) {
	for _, v := range s.Volumes {
		switch v.Type {
		case VolumeScratch:
			// An in-memory directory of the container, empty at every start.
			mounts, _ := task.Config["mount"].([]map[string]any)
			task.Config["mount"] = append(mounts, map[string]any{"type": "tmpfs", "target": v.Destination, "readonly": false})
		case VolumeHost, VolumeCSI:
			if group.Volumes == nil {
				group.Volumes = map[string]*nomadapi.VolumeRequest{}
			}
			req := &nomadapi.VolumeRequest{Name: v.Name, Type: v.Type, Source: v.Source, ReadOnly: v.ReadOnly}
			if v.Type == VolumeCSI {
				req.AccessMode, req.AttachmentMode = v.AccessMode, v.AttachmentMode
			}
			group.Volumes[v.Name] = req
			task.VolumeMounts = append(task.VolumeMounts, &nomadapi.VolumeMount{
				Volume: ptr(v.Name), Destination: ptr(v.Destination), ReadOnly: ptr(v.ReadOnly),
			})
		}
	}
}

// checkVolumes is Compile's check of a hand-built Spec's volumes (Parse reports the same,
// source-located).
func checkVolumes(s *Spec) []error {
	var errs []error
	names, dests := map[string]bool{}, map[string]bool{}
	for _, v := range s.Volumes {
		if msg := volumeName(v.Name); msg != "" || names[v.Name] {
			errs = append(errs, fmt.Errorf("volume %q: a duplicate, or its name %s", v.Name, msg))
		}
		names[v.Name] = true
		if !path.IsAbs(v.Destination) || path.Clean(v.Destination) == "/" || dests[path.Clean(v.Destination)] {
			errs = append(errs, fmt.Errorf("volume %q: destination %q", v.Name, v.Destination))
		}
		dests[path.Clean(v.Destination)] = true
		switch v.Type {
		case VolumeHost, VolumeCSI:
			if v.Source == "" {
				errs = append(errs, fmt.Errorf("volume %q: no source", v.Name))
			}
			if s.Driver == "raw_exec" {
				errs = append(errs, fmt.Errorf("volume %q: raw_exec cannot mount volumes", v.Name))
			}
		case VolumeScratch:
			if s.Driver != "docker" || v.Source != "" || v.ReadOnly {
				errs = append(errs, fmt.Errorf("volume %q: a scratch volume needs an image, and has no source or read_only", v.Name))
			}
		default:
			errs = append(errs, fmt.Errorf("volume %q: type %q", v.Name, v.Type))
		}
	}
	return errs
}
