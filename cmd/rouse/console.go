package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/console"
)

func newConsoleCmd(o *rootOptions) *cobra.Command {
	var (
		cfg console.Config
		all bool
	)
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve a read-only web console: services, revisions, traffic, scaling, failures",
		Long: `console serves a web page of the platform on --listen: every service with its URL, latest
and ready revision, traffic split and tags; per revision its instances (desired and ready),
requests per second, p50/p95 latency, requests in flight and held, cold-start waits and the
scaler's last decisions, as charts over the last --history; the gateways and scalers; and
recent failures with Nomad's reason. It samples every --interval and keeps the history in
memory only. It changes nothing.

It reads what 'rouse list' and 'rouse describe' read, with the same tokens (NOMAD_TOKEN,
CONSUL_HTTP_TOKEN; a denied read is shown on the page with the capability it needs), and
the gateways' and scalers' admin listeners, found in Consul.`,
		Example: `  rouse console
  rouse console --listen 0.0.0.0:9300 -A`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			cfg.Control, cfg.Namespace = c, o.Namespace
			scope := "namespace " + o.Namespace
			if all {
				cfg.Namespace, scope = "", "every namespace"
			}
			cons, err := console.New(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Stdout, "rouse console: %s (%s, sampled every %s; Ctrl-C stops)\n", cons.URL(), scope, cfg.Interval)
			return cons.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", console.DefaultListen, "address to serve the console on")
	f.BoolVarP(&all, "all-namespaces", "A", false, "show the services of every namespace")
	f.DurationVar(&cfg.Interval, "interval", console.DefaultInterval, "time between two samples (and page refreshes)")
	f.DurationVar(&cfg.History, "history", console.DefaultHistory, "how much history the charts keep (in memory)")
	f.IntVar(&cfg.MaxServices, "max-services", console.DefaultMaxServices, "services described each sample (revisions, instances); the rest are listed only")
	return cmd
}
