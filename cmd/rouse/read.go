package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/control"
)

func newListCmd(o *rootOptions) *cobra.Command {
	var out outputFlag
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List services with their URL, latest revision and traffic",
		Example: `  rouse list
  rouse list -A -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ns := o.Namespace
			if all {
				ns = ""
			}
			svcs, err := c.List(cmd.Context(), ns)
			if err != nil {
				return err
			}
			if out.json() {
				return writeJSON(o.Stdout, svcs)
			}
			if len(svcs) == 0 {
				fmt.Fprintf(o.Stdout, "No services in namespace %s.\n", o.Namespace)
				return nil
			}
			tw := table(o.Stdout)
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tURL\tLATEST\tREADY\tTRAFFIC\tUPDATED")
			now := time.Now()
			for _, s := range svcs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.URL, dash(s.LatestReady), s.Ready, routeText(s.Route), age(s.UpdatedAt, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the services of every namespace")
	out.register(cmd)
	return cmd
}

func newDescribeCmd(o *rootOptions) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:               "describe SERVICE",
		Short:             "Show a service: URL, traffic, tags, revisions with instances, conditions",
		Example:           `  rouse describe hello`,
		Args:              exactArgs("SERVICE"),
		ValidArgsFunction: completeServices(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			d, err := c.Describe(cmd.Context(), o.Namespace, args[0])
			if err != nil {
				return err
			}
			if out.json() {
				return writeJSON(o.Stdout, d)
			}
			printDescribe(o, d)
			return nil
		},
	}
	out.register(cmd)
	return cmd
}

func printDescribe(o *rootOptions, d *control.ServiceDetail) {
	w := o.Stdout
	now := time.Now()
	fmt.Fprintf(w, "Name:         %s\n", d.Name)
	fmt.Fprintf(w, "Namespace:    %s\n", d.Namespace)
	fmt.Fprintf(w, "URL:          %s\n", d.URL)
	if d.Visibility != "" {
		fmt.Fprintf(w, "Visibility:   %s (only on the gateways' internal listener)\n", d.Visibility)
	}
	if d.TagHeaderRouting {
		fmt.Fprintf(w, "Tag header:   on (Rouse-Tag: <tag> on the URL picks the tag's revision)\n")
	}
	fmt.Fprintf(w, "Generation:   %d\n", d.Generation)
	fmt.Fprintf(w, "Latest:       %s (created), %s (ready)\n", dash(d.Latest), dash(d.LatestReady))
	fmt.Fprintf(w, "Updated:      %s ago\n", age(d.UpdatedAt, now))

	fmt.Fprintln(w, "\nTraffic:")
	tw := table(w)
	for _, t := range d.Traffic {
		name := trafficLine(t)
		if t.Latest {
			name += " (" + dash(d.LatestReady) + ")"
		}
		url := ""
		if t.Tag != "" {
			for _, tag := range d.Tags {
				if tag.Tag == t.Tag {
					url = tag.URL
				}
			}
		}
		fmt.Fprintf(tw, "  %d%%\t%s\t%s\t%s\n", t.Percent, name, tagText(t.Tag), url)
	}
	_ = tw.Flush()

	fmt.Fprintln(w, "\nRevisions:")
	printRevisions(w, d.Revisions, now, "  ")
	printScaleKnobs(w, d.Revisions)

	fmt.Fprintln(w, "\nConditions:")
	tw = table(w)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tMESSAGE")
	for _, c := range d.Conditions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Type, c.Status, dash(c.Reason), c.Message)
	}
	_ = tw.Flush()
}

// printScaleKnobs lists the revisions that set scale_down_delay or activation_scale; nothing
// when none does.
func printScaleKnobs(w interface{ Write([]byte) (int, error) }, revs []control.RevisionInfo) {
	var rows []string
	for _, r := range revs {
		if r.ScaleDownDelay == "" && r.ActivationScale == 0 {
			continue
		}
		act := "-"
		if r.ActivationScale > 0 {
			act = fmt.Sprint(r.ActivationScale)
		}
		rows = append(rows, fmt.Sprintf("  %s\t%s\t%s\n", r.Name, dash(r.ScaleDownDelay), act))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nAutoscaling:")
	tw := table(w)
	fmt.Fprintln(tw, "  REVISION\tSCALE_DOWN_DELAY\tACTIVATION_SCALE")
	for _, row := range rows {
		fmt.Fprint(tw, row)
	}
	_ = tw.Flush()
}

func tagText(tag string) string {
	if tag == "" {
		return ""
	}
	return "#" + tag
}

func printRevisions(w interface{ Write([]byte) (int, error) }, revs []control.RevisionInfo, now time.Time, indent string) {
	images := false // the IMAGE column only for services that run images
	for _, r := range revs {
		images = images || r.Image != ""
	}
	tw := table(w)
	head := "NAME\tGEN\tSTATUS\tTRAFFIC\tTAGS\tINSTANCES\tCREATED"
	if images {
		head += "\tIMAGE"
	}
	fmt.Fprintf(tw, "%s%s\tREASON\n", indent, head)
	for _, r := range revs {
		name := r.Name
		if r.LatestReady {
			name += " (latest)"
		}
		fmt.Fprintf(tw, "%s%s\t%d\t%s\t%d%%\t%s\t%d/%d\t%s", indent, name, r.Generation, r.Status, r.Percent,
			dash(strings.Join(r.Tags, ",")), r.Ready, r.Desired, age(r.Created, now))
		if images {
			fmt.Fprintf(tw, "\t%s", imageText(r.Image, r.ImageDigest))
		}
		fmt.Fprintf(tw, "\t%s\n", r.Reason)
	}
	_ = tw.Flush()
}

// imageText is an image and the digest it runs, in one cell:
// "127.0.0.1:5000/hi:1 @ sha256:3f1c2a…" for a resolved tag, the reference alone when it
// names its digest itself, "… (follows tag)" when it was not resolved.
func imageText(image, digest string) string {
	switch {
	case image == "":
		return "-"
	case digest == "":
		return image + " (follows tag)"
	case strings.Contains(image, "@"):
		return image
	}
	short := digest
	if alg, hex, ok := strings.Cut(digest, ":"); ok && len(hex) > 12 {
		short = alg + ":" + hex[:12] + "…"
	}
	return image + " @ " + short
}

func newRevisionsCmd(o *rootOptions) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:               "revisions SERVICE",
		Aliases:           []string{"revision", "rev"},
		Short:             "List a service's revisions, newest first",
		Example:           `  rouse revisions hello -o json`,
		Args:              exactArgs("SERVICE"),
		ValidArgsFunction: completeServices(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			revs, err := c.Revisions(cmd.Context(), o.Namespace, args[0])
			if err != nil {
				return err
			}
			if out.json() {
				return writeJSON(o.Stdout, revs)
			}
			printRevisions(o.Stdout, revs, time.Now(), "")
			return nil
		},
	}
	out.register(cmd)
	return cmd
}

// completeServices completes a service name from the cluster (best effort: no completion
// when it cannot be reached).
func completeServices(o *rootOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := o.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		svcs, err := c.List(cmd.Context(), o.Namespace)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, s := range svcs {
			out = append(out, s.Name)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeRevisions completes revision names of the service in args[0].
func completeRevisions(o *rootOptions, suffix string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return completeServices(o)(cmd, args, "")
		}
		c, err := o.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		revs, err := c.Revisions(cmd.Context(), o.Namespace, args[0])
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, r := range revs {
			if r.Status != control.RevisionFailed {
				out = append(out, r.Name+suffix)
			}
		}
		dir := cobra.ShellCompDirectiveNoFileComp
		if suffix != "" {
			dir |= cobra.ShellCompDirectiveNoSpace
		}
		return out, dir
	}
}
