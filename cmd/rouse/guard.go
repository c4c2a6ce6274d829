package main

import (
	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/guard"
)

// newGuardCmd is the in-group concurrency limiter that a revision with a hard
// `concurrency` limit runs beside its app (jobspec compiles it as the rouse-guard task).
func newGuardCmd(o *rootOptions) *cobra.Command {
	var (
		cfg      guard.Config
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "guard",
		Short: "Run the concurrency guard of one instance (a task rouse adds to hard-limited revisions)",
		Long: `The guard sits beside one instance's app, in the revision's Nomad group: the instance's
Consul service points at it, and it lets at most --concurrency requests reach the app at
once, the others waiting in arrival order. It speaks HTTP/1.1 and h2c, kept alive on both
sides (--h2c: the app speaks h2c). The limit holds however many gateways there are, and a
request whose gateway died keeps its slot until the app has answered it.

rouse adds it to every revision with concurrency > 0; it is not meant to be run by hand.
The Nomad client needs raw_exec and meta { rouse_bin = "<path of this binary>" }.`,
		Example: `  rouse guard --listen 10.0.0.5:24001 --upstream 10.0.0.5:24000 --concurrency 1 --timeout 5m`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(o, logLevel)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			cfg.Logger = log.Named("guard")
			g, err := guard.New(cfg)
			if err != nil {
				return usagef("%v", err)
			}
			return g.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "", "address the gateways connect to (required)")
	f.StringVar(&cfg.Upstream, "upstream", "", "the app's address (required)")
	f.BoolVar(&cfg.H2C, "h2c", false, "the app speaks HTTP/2 with prior knowledge (protocol = \"h2c\")")
	f.IntVar(&cfg.Limit, "concurrency", 0, "requests the app has at most at once (required, ≥ 1)")
	f.DurationVar(&cfg.Timeout, "timeout", 0, "the revision's request timeout: an admitted request is cut that long after admission (required)")
	f.IntVar(&cfg.MaxQueued, "max-queued", 1000, "requests waiting for a slot; more get 503")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
