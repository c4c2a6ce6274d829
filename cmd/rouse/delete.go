package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/control"
)

func newDeleteCmd(o *rootOptions) *cobra.Command {
	var (
		wait time.Duration
		out  outputFlag
	)
	cmd := &cobra.Command{
		Use:   "delete SERVICE",
		Short: "Delete a service: its route, then every revision job and config",
		Long: `Delete removes the service's route first (the gateway stops serving its host at
once), then purges every revision's Nomad job and Consul KV config, and waits until Consul
lists none of its instances. It leaves no job, no KV key and no Consul service behind.`,
		Example:           `  rouse delete hello`,
		Args:              exactArgs("SERVICE"),
		ValidArgsFunction: completeServices(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			pw := o.Stdout
			if out.json() {
				pw = o.Stderr
			}
			p := newProgress(pw, isTTY(pw))
			res, err := c.Delete(cmd.Context(), o.Namespace, args[0], wait, p.event)
			p.close(err == nil)
			if err != nil {
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(o.Stderr, "Warning: %s\n", w)
			}
			if out.json() {
				return writeJSON(o.Stdout, res)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", control.DefaultWait, "how long to wait for the instances to leave Consul")
	out.register(cmd)
	return cmd
}

func newGCCmd(o *rootOptions) *cobra.Command {
	var (
		keep int
		out  outputFlag
	)
	cmd := &cobra.Command{
		Use:   "gc [SERVICE]",
		Short: "Purge old revisions that carry no traffic",
		Long: `GC keeps, per service, the newest --keep revisions that carry no traffic and purges
the older ones (job and config). Revisions in the route, the latest ones, and revisions
still starting are never purged. Without SERVICE it cleans every service of the namespace.
"rouse apply" runs the same GC after every successful apply.`,
		Example: `  rouse gc
  rouse gc hello --keep 3`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("expected at most one SERVICE, got %d", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeServices(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			svc := ""
			if len(args) == 1 {
				svc = args[0]
			}
			pw := o.Stdout
			if out.json() {
				pw = o.Stderr
			}
			p := newProgress(pw, isTTY(pw))
			res, err := c.GC(cmd.Context(), o.Namespace, svc, keep, p.event)
			p.close(err == nil)
			if out.json() && err == nil {
				return writeJSON(o.Stdout, res)
			}
			for _, r := range res {
				if len(r.Purged) == 0 {
					fmt.Fprintf(o.Stdout, "%s: nothing to remove.\n", r.Service)
				} else {
					fmt.Fprintf(o.Stdout, "%s: removed %s.\n", r.Service, strings.Join(r.Purged, ", "))
				}
			}
			return err
		},
	}
	cmd.Flags().IntVar(&keep, "keep", control.DefaultKeep, "revisions without traffic to keep per service")
	out.register(cmd)
	return cmd
}
