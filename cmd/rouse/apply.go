package main

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/jobspec"
)

func newApplyCmd(o *rootOptions) *cobra.Command {
	var (
		files  []string
		vars   []string
		wait   time.Duration
		detach bool
		keep   int
		// noResolve is --no-resolve-image: resolve_image = false for this apply.
		noResolve bool
		out       outputFlag
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [-var name=value]...",
		Short: "Create or update a service from its HCL spec",
		Long: `Apply makes a service spec true. If its template changed (image, command, env,
resources, autoscaling, …) apply registers a new immutable revision, waits until an instance
answers its readiness probe, then routes traffic as the spec says (default: 100% to the latest
ready revision). If only traffic changed, it updates the route. If nothing changed, it says
"unchanged" and registers nothing.

An image's tag is resolved to its digest first (with this machine's docker credentials), and
the revision runs that digest: re-pushing the tag changes nothing until the next apply, which
then creates a new revision. --no-resolve-image (or resolve_image = false in the spec) skips
this for registries only the Nomad clients can reach; the revision then follows the tag.

A tag that cannot be resolved fails before anything is registered. A revision that fails
(its task dies, its image cannot be pulled, it is not ready within --wait) is stopped, the
route is left as it was, and apply exits 1 with Nomad's reason. A revision with
autoscaling initial = 0 and min = 0 is routed at zero: no instance starts until the first
request.`,
		Example: `  rouse apply -f hello.hcl
  rouse apply -f services/hello/ -var image=ghcr.io/acme/hello:1.3
  rouse apply -f hello.hcl --wait 5m -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return usagef("apply needs a spec: -f FILE or -f DIR")
			}
			varMap := map[string]string{}
			for _, v := range vars {
				k, val, ok := strings.Cut(v, "=")
				if !ok || k == "" {
					return usagef("-var %q: expected name=value", v)
				}
				varMap[k] = val
			}
			spec, parsed, diags := jobspec.ParseFiles(files, varMap)
			if diags.HasErrors() {
				return printDiags(o, parsed, diags)
			}
			if len(diags) > 0 { // warnings
				_ = printDiags(o, parsed, diags)
			}
			if err := settleNamespace(o, cmd, spec); err != nil {
				return err
			}
			if noResolve {
				spec.ResolveImage = false
				for i := range spec.Sidecars {
					spec.Sidecars[i].ResolveImage = false
				}
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			// With -o json the result goes to stdout alone; progress goes to stderr.
			pw := o.Stdout
			if out.json() {
				pw = o.Stderr
			}
			p := newProgress(pw, isTTY(pw))
			res, err := c.Apply(cmd.Context(), control.ApplyOptions{
				Spec: spec, Source: sourceOf(parsed), Wait: wait, Detach: detach, Keep: keep, Progress: p.event,
			})
			p.close(err == nil)
			var ds hcl.Diagnostics
			if errors.As(err, &ds) {
				return printDiags(o, parsed, ds)
			}
			var ie *control.ImageError
			if errors.As(err, &ie) {
				// Point at the image in the spec, as any other error in it.
				at := "image"
				if ie.Sidecar != "" {
					at = "sidecar." + ie.Sidecar + ".image"
				}
				return printDiags(o, parsed, hcl.Diagnostics{{
					Severity: hcl.DiagError, Summary: "Cannot resolve image",
					Detail:  ie.Error() + ". Nothing was registered; the route is unchanged.",
					Subject: spec.RangeOf(at).Ptr(),
				}})
			}
			if err != nil {
				if errors.Is(err, cmd.Context().Err()) && cmd.Context().Err() != nil {
					return fmt.Errorf("interrupted; a revision that was starting keeps starting: run apply again to wait for it and route traffic")
				}
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(o.Stderr, "Warning: %s\n", w)
			}
			if out.json() {
				return writeJSON(o.Stdout, res)
			}
			for _, t := range res.Tags {
				fmt.Fprintf(o.Stdout, "Tag %s → %s: %s\n", t.Tag, t.Revision, t.URL)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "file", "f", nil, "spec file or directory of *.hcl files (repeatable)")
	f.StringArrayVar(&vars, "var", nil, "set an input variable: name=value (repeatable; env ROUSE_VAR_<name> too)")
	f.DurationVar(&wait, "wait", control.DefaultWait, "how long a new revision may take to become ready")
	f.BoolVar(&detach, "detach", false, "register the revision and return without waiting; the route is updated by the next apply once it is ready")
	f.IntVar(&keep, "keep", control.DefaultKeep, "revisions without traffic to keep; older ones are purged (-1 keeps all)")
	f.BoolVar(&noResolve, "no-resolve-image", false, "do not resolve the image's tag to a digest (as resolve_image = false): the revision follows the tag")
	out.register(cmd)
	_ = cmd.MarkFlagFilename("file", "hcl", "json")
	return cmd
}

// Nomad's CLI uses a single dash for -var; cobra would read "-var" as -v -a -r.
func normalizeVarFlag(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		switch {
		case a == "-var":
			a = "--var"
		case strings.HasPrefix(a, "-var="):
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

// settleNamespace decides the namespace: the spec's when it names one, else the flag's
// (NOMAD_NAMESPACE, else "default"). Both set and different is a mistake worth stopping.
func settleNamespace(o *rootOptions, cmd *cobra.Command, spec *jobspec.Spec) error {
	written := spec.RangeOf("namespace") != spec.DefRange
	if !written {
		spec.Namespace = o.Namespace
		return nil
	}
	if cmd.Flags().Changed("namespace") && o.Namespace != spec.Namespace {
		return fmt.Errorf("the spec says namespace %q but --namespace is %q", spec.Namespace, o.Namespace)
	}
	return nil
}

// sourceOf is the applied HCL as one text, kept in the service record for `describe`.
func sourceOf(files map[string]*hcl.File) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 1 {
		return string(files[names[0]].Bytes)
	}
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "# %s\n%s\n", n, files[n].Bytes)
	}
	return b.String()
}

// printDiags prints diagnostics with file:line:col and the source snippet, and returns
// an error that only sets the exit code (the diagnostics said it all).
func printDiags(o *rootOptions, files map[string]*hcl.File, diags hcl.Diagnostics) error {
	tty := isTTY(o.Stderr)
	width := uint(0)
	if tty {
		width = 100
	}
	for _, d := range diags {
		var buf bytes.Buffer
		_ = hcl.NewDiagnosticTextWriter(&buf, files, width, tty).WriteDiagnostic(d)
		text := buf.String()
		// HCL says "on FILE line N"; editors and CI annotations want FILE:LINE:COL.
		if r := d.Subject; r != nil {
			text = strings.Replace(text, fmt.Sprintf("on %s line %d", r.Filename, r.Start.Line),
				fmt.Sprintf("on %s:%d:%d", r.Filename, r.Start.Line, r.Start.Column), 1)
		}
		fmt.Fprint(o.Stderr, text)
	}
	if !diags.HasErrors() {
		return nil
	}
	n := 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			n++
		}
	}
	return silentError{fmt.Sprintf("%d error(s) in the spec", n)}
}

// silentError has been shown already: only the exit code is left to set.
type silentError struct{ msg string }

func (e silentError) Error() string { return e.msg }
