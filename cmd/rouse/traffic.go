package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/store"
)

func newTrafficCmd(o *rootOptions) *cobra.Command {
	var (
		tags  []string
		untag []string
		out   outputFlag
	)
	cmd := &cobra.Command{
		Use:   "traffic SERVICE [REVISION=PERCENT | @latest=PERCENT]... [--tag REVISION=TAG]... [--untag TAG]...",
		Short: "Split traffic between revisions and tag revisions",
		Long: `Traffic sets how a service's requests are split between its revisions. The
percentages replace the current split and must sum to 100; @latest is the latest ready
revision (it moves with every apply). --tag gives a revision its own URL,
http://<tag>-<service>.<namespace>.<domain>, without giving it a share; tags stay on their
revisions when the split changes, until --untag.

With no split, tag or untag, it shows the current traffic.

This is an override: the next "rouse apply" makes the spec's traffic (default: 100% to
@latest) true again.`,
		Example: `  rouse traffic hello hello-00001=90 @latest=10
  rouse traffic hello --tag hello-00002=canary
  rouse traffic hello @latest=100 --untag canary
  rouse traffic hello -o json`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeRevisions(o, "="),
		PreRunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("expected SERVICE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			svc := args[0]
			var u control.TrafficUpdate
			for _, a := range args[1:] {
				t, err := parseSplit(a)
				if err != nil {
					return err
				}
				u.Split = append(u.Split, t)
			}
			for _, a := range tags {
				target, tag, ok := strings.Cut(a, "=")
				if !ok || target == "" || tag == "" {
					return usagef("--tag %q: expected REVISION=TAG or @latest=TAG", a)
				}
				u.Tags = append(u.Tags, targetOf(target, 0, tag))
			}
			u.Untag = untag
			c, err := o.client()
			if err != nil {
				return err
			}
			var res *control.TrafficResult
			if len(u.Split) == 0 && len(u.Tags) == 0 && len(u.Untag) == 0 {
				d, err := c.Describe(cmd.Context(), o.Namespace, svc)
				if err != nil {
					return err
				}
				res = &control.TrafficResult{Namespace: d.Namespace, Service: d.Name, URL: d.URL, Traffic: d.Traffic, Route: d.Route, Tags: d.Tags}
			} else if res, err = c.SetTraffic(cmd.Context(), o.Namespace, svc, u); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(o.Stdout, res)
			}
			printTraffic(o, res)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "tag a revision: REVISION=TAG or @latest=TAG (repeatable)")
	cmd.Flags().StringArrayVar(&untag, "untag", nil, "remove a tag (repeatable)")
	out.register(cmd)
	return cmd
}

// parseSplit reads "hello-00001=90", "hello-00001=90%" or "@latest=10".
func parseSplit(a string) (store.TrafficTarget, error) {
	target, pct, ok := strings.Cut(a, "=")
	if !ok || target == "" {
		return store.TrafficTarget{}, usagef("%q: expected REVISION=PERCENT or @latest=PERCENT", a)
	}
	n, err := strconv.Atoi(strings.TrimSuffix(pct, "%"))
	if err != nil {
		return store.TrafficTarget{}, usagef("%q: %q is not a whole percentage", a, pct)
	}
	return targetOf(target, n, ""), nil
}

func targetOf(name string, pct int, tag string) store.TrafficTarget {
	if name == "@latest" {
		return store.TrafficTarget{Latest: true, Percent: pct, Tag: tag}
	}
	return store.TrafficTarget{Revision: name, Percent: pct, Tag: tag}
}

func printTraffic(o *rootOptions, r *control.TrafficResult) {
	for _, w := range r.Warnings {
		fmt.Fprintf(o.Stderr, "Warning: %s\n", w)
	}
	w := o.Stdout
	fmt.Fprintf(w, "Service %s: %s\n", r.Service, r.URL)
	tw := table(w)
	fmt.Fprintln(tw, "  REVISION\tPERCENT\tTAG\tURL")
	for _, rt := range r.Route {
		url := ""
		if rt.Tag != "" {
			url = "http://" + rt.Tag + "-" + strings.TrimPrefix(r.URL, "http://")
		}
		fmt.Fprintf(tw, "  %s\t%d%%\t%s\t%s\n", rt.Revision, rt.Percent, dash(rt.Tag), url)
	}
	_ = tw.Flush()
}

func newRollbackCmd(o *rootOptions) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "rollback SERVICE [REVISION]",
		Short: "Route 100% of traffic to the previous (or the given) ready revision",
		Long: `Rollback routes all traffic to REVISION, or, without one, to the newest ready
revision older than the one that serves most traffic now. Tags stay on their revisions.

Like "rouse traffic" it is an override until the next "rouse apply".`,
		Example: `  rouse rollback hello
  rouse rollback hello hello-00002`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("expected SERVICE [REVISION], got %d argument(s)", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeRevisions(o, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			rev := ""
			if len(args) == 2 {
				rev = args[1]
			}
			res, err := c.Rollback(cmd.Context(), o.Namespace, args[0], rev)
			if err != nil {
				return err
			}
			if out.json() {
				return writeJSON(o.Stdout, res)
			}
			fmt.Fprintf(o.Stdout, "Rolled back %s from %s to %s.\n", res.Service, dash(res.From), res.To)
			printTraffic(o, &res.TrafficResult)
			return nil
		},
	}
	out.register(cmd)
	return cmd
}
