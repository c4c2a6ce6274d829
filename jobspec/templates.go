package jobspec

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"
)

// Template is one `template` block: a file (or env) rendered by Nomad into the main task
// from Nomad Variables (or anything else Nomad's template language reads). Its text is
// part of the revision template, so a change of which variable it names is a new
// revision; the variables' values are not: Nomad renders them on the node, re-renders
// when they change and applies ChangeMode.
type Template struct {
	Destination  string `json:"destination"`             // relative to the task dir: local/…, secrets/… or alloc/…
	Data         string `json:"data"`                    // Nomad template text; it holds references, never values
	Env          bool   `json:"env,omitempty"`           // the rendered file is also loaded as the task's environment
	ChangeMode   string `json:"change_mode"`             // restart (default), signal or noop
	ChangeSignal string `json:"change_signal,omitempty"` // with change_mode = "signal"
}

// The change modes rouse offers (Nomad's, without script: a script runs in the task, and
// nothing of the revision says what it may do).
const (
	ChangeRestart = "restart"
	ChangeSignal  = "signal"
	ChangeNoop    = "noop"
)

// templateDirs are the task-directory folders a template may render into: local/ and
// secrets/ (private to the task; secrets/ is in memory and noexec where the driver
// isolates), alloc/ (shared with the group's other tasks).
var templateDirs = []string{"local", "secrets", "alloc"}

// changeSignals are the signals a change_signal may name.
var changeSignals = []string{"SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGWINCH", "SIGALRM", "SIGCONT", "SIGTTIN", "SIGTTOU"}

// nomadVarCall finds Nomad's variable functions in template text; varLiteral the literal
// path that follows one ("path" or `path`).
var (
	nomadVarCall = regexp.MustCompile(`\bnomadVar(List|ListSafe|Exists)?\b`)
	varLiteral   = regexp.MustCompile("^\\s+(?:\"([^\"\\\\]*)\"|`([^`]*)`)")
)

// VariableRef is one Nomad Variable path a template names.
type VariableRef struct {
	Path string
	// Exact is true for nomadVar (one variable, which must exist: Nomad would wait for it
	// forever) and false for nomadVarList/nomadVarListSafe (a prefix) and nomadVarExists
	// (the template handles absence).
	Exact    bool
	Template int // index in Spec.Templates
}

// VariablePrefix is where a service's Nomad Variables live: nomad/jobs/<service>. A
// revision's job ID changes with every revision (<service>-00001, …), so Nomad's implicit
// per-job path nomad/jobs/<job> cannot hold a service's secrets; this one is the same for
// every revision.
func VariablePrefix(service string) string { return "nomad/jobs/" + service }

// TemplateVariables lists the variables the spec's templates name, in order.
func (s *Spec) TemplateVariables() []VariableRef {
	var out []VariableRef
	for i, t := range s.Templates {
		refs, _ := variableRefs(t.Data)
		for _, r := range refs {
			r.Template = i
			out = append(out, r)
		}
	}
	return out
}

// variableRefs finds the variable paths in template text; bad is a call without a literal
// path (rouse could not check it).
func variableRefs(data string) (refs []VariableRef, bad []string) {
	for _, m := range nomadVarCall.FindAllStringSubmatchIndex(data, -1) {
		fn := data[m[0]:m[1]]
		lit := varLiteral.FindStringSubmatch(data[m[1]:])
		if lit == nil {
			bad = append(bad, fn)
			continue
		}
		p := lit[1] + lit[2]
		refs = append(refs, VariableRef{Path: p, Exact: fn == "nomadVar"})
	}
	return refs, bad
}

func (d *decoder) templates(blocks hcl.Blocks) {
	s := d.spec
	dests := map[string]hcl.Range{}
	for i, blk := range blocks {
		t := Template{ChangeMode: ChangeRestart}
		b := body{d: d, path: fmt.Sprintf("template[%d].", i), label: "template.",
			attrs: d.content(blk, attrSchema("destination", "data", "env", "change_mode", "change_signal"))}
		if b.str("destination", &t.Destination) {
			if msg := templateDestination(t.Destination); msg != "" {
				b.invalid("destination", "%s", msg)
			} else {
				t.Destination = path.Clean(t.Destination)
				if prev, dup := dests[t.Destination]; dup {
					d.errorf(b.rng("destination"), "Duplicate template destination",
						"Another template already renders %s (at %s); each template needs its own file.", t.Destination, prev)
				} else {
					dests[t.Destination] = b.rng("destination")
				}
			}
		} else if !b.has("destination") {
			d.errorf(blk.DefRange, "Missing template destination",
				`A template needs destination, the file it renders in the task directory: "local/app.env" or "secrets/db.txt".`)
		}
		if b.str("data", &t.Data) {
			d.templateData(b, t.Data)
		} else if !b.has("data") {
			d.errorf(blk.DefRange, "Missing template data",
				"A template needs data, the Nomad template text it renders, such as "+
					`{{ with nomadVar "%s/db" }}{{ .password }}{{ end }}.`, VariablePrefix(s.Name))
		}
		b.bool("env", &t.Env)
		if b.str("change_mode", &t.ChangeMode) {
			switch t.ChangeMode {
			case ChangeRestart, ChangeSignal, ChangeNoop:
			default:
				b.invalid("change_mode", `change_mode is what Nomad does when a rendered value changes: "restart" (the default: restart the task), `+
					`"signal" (send change_signal) or "noop" (nothing; the app rereads the file), not %q.`, t.ChangeMode)
			}
		}
		if b.str("change_signal", &t.ChangeSignal) {
			switch {
			case t.ChangeMode != ChangeSignal:
				b.invalid("change_signal", `change_signal is sent only with change_mode = "signal" (change_mode is %q).`, t.ChangeMode)
			case !slices.Contains(changeSignals, t.ChangeSignal):
				b.invalid("change_signal", "change_signal must be one of %s, not %q.", strings.Join(changeSignals, ", "), t.ChangeSignal)
			}
		} else if t.ChangeMode == ChangeSignal && !b.has("change_signal") {
			d.errorf(b.rng("change_mode"), "Missing template change_signal",
				`change_mode = "signal" needs change_signal, the signal to send, such as "SIGHUP".`)
		}
		s.Templates = append(s.Templates, t)
	}
}

// templateDestination says what is wrong with a destination, or "".
func templateDestination(dst string) string {
	switch {
	case strings.TrimSpace(dst) == "":
		return "destination must not be empty."
	case path.IsAbs(dst):
		return fmt.Sprintf("destination %q is absolute; it is relative to the task directory, such as \"local/app.env\" or \"secrets/db.txt\".", dst)
	}
	c := path.Clean(dst)
	if c == ".." || strings.HasPrefix(c, "../") {
		return fmt.Sprintf("destination %q leaves the task directory; Nomad renders templates only inside it.", dst)
	}
	top, rest, _ := strings.Cut(c, "/")
	if !slices.Contains(templateDirs, top) || rest == "" {
		return fmt.Sprintf("destination %q must name a file under local/, secrets/ (in memory where the driver isolates: for secrets) or alloc/ "+
			"(shared with the group's other tasks).", dst)
	}
	return ""
}

// templateData checks the variable references in a template's text: each names a literal
// path at or below the service's prefix, in the service's namespace.
func (d *decoder) templateData(b body, data string) {
	s := d.spec
	if strings.TrimSpace(data) == "" {
		b.invalid("data", "data must not be empty.")
		return
	}
	prefix := VariablePrefix(s.Name)
	refs, bad := variableRefs(data)
	for _, fn := range bad {
		b.invalid("data", "%s must be followed by its path as a literal string (%s \"%s/db\"), so that rouse can check at apply that the revision may read it.",
			fn, fn, prefix)
	}
	for _, r := range refs {
		switch p := r.Path; {
		case strings.Contains(p, "@"):
			b.invalid("data", "Variable %q names a namespace; a revision reads variables of its own namespace (%s) only.", p, s.Namespace)
		case p != prefix && !strings.HasPrefix(p, prefix+"/"):
			b.invalid("data", "Variable %q is outside %s/: a revision of service %q reads only the variables at or below %s. "+
				"Nomad's own rule (nomad/jobs/<job>) would tie them to one revision's job ID, which changes with every revision.",
				p, prefix, s.Name, prefix)
		case path.Clean(p) != p:
			b.invalid("data", "Variable path %q is not clean; write it as %q.", p, path.Clean(p))
		}
	}
}

func compileTemplates(s *Spec, task *nomadapi.Task) {
	for _, t := range s.Templates {
		nt := &nomadapi.Template{
			DestPath:     ptr(t.Destination),
			EmbeddedTmpl: ptr(t.Data),
			ChangeMode:   ptr(t.ChangeMode),
			Envvars:      ptr(t.Env),
		}
		if t.ChangeMode == ChangeSignal {
			nt.ChangeSignal = ptr(t.ChangeSignal)
		}
		task.Templates = append(task.Templates, nt)
	}
}

// checkTemplates is Compile's check of a hand-built Spec's templates (Parse reports the
// same, source-located).
func checkTemplates(s *Spec) []error {
	var errs []error
	seen := map[string]bool{}
	for i, t := range s.Templates {
		if msg := templateDestination(t.Destination); msg != "" {
			errs = append(errs, fmt.Errorf("template %d: %s", i, msg))
		} else if seen[path.Clean(t.Destination)] {
			errs = append(errs, fmt.Errorf("template %d: destination %s rendered twice", i, t.Destination))
		}
		seen[path.Clean(t.Destination)] = true
		switch {
		case t.Data == "":
			errs = append(errs, fmt.Errorf("template %d: no data", i))
		case t.ChangeMode != ChangeRestart && t.ChangeMode != ChangeSignal && t.ChangeMode != ChangeNoop:
			errs = append(errs, fmt.Errorf("template %d: change_mode %q", i, t.ChangeMode))
		case (t.ChangeMode == ChangeSignal) != (t.ChangeSignal != ""):
			errs = append(errs, fmt.Errorf("template %d: change_signal %q with change_mode %s", i, t.ChangeSignal, t.ChangeMode))
		}
	}
	return errs
}
