package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/revmeta"
)

func newLogsCmd(o *rootOptions) *cobra.Command {
	var out outputFlag
	var lo control.LogOptions
	cmd := &cobra.Command{
		Use:   "logs SERVICE",
		Short: "Print (and follow) the output of a service's instances",
		Long: `Logs prints the last lines of each running instance of the service's revisions (for a
revision with none running, of its newest instance: the one that failed or went to zero),
each line prefixed with its revision and instance. With -f it keeps streaming new lines
from all of them, and from each instance that starts meanwhile (scale-up, a wake from
zero, a new revision), until Ctrl-C.

--task reads a sidecar's output instead of the main task's (the one that serves the port,
"app"): the name of a sidecar "<name>" block of the spec. Revisions without that task are
skipped; if none has it, the error lists the tasks each revision has.`,
		Example: `  rouse logs hello
  rouse logs hello -f --revision hello-00002
  rouse logs hello --task migrate
  rouse logs hello --stderr --tail 200 -o json`,
		Args:              exactArgs("SERVICE"),
		ValidArgsFunction: completeServices(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			if lo.Tail < 0 {
				return fmt.Errorf("--tail must be 0 or more (lines per instance), got %d", lo.Tail)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			enc := json.NewEncoder(o.Stdout)
			return c.Logs(cmd.Context(), o.Namespace, args[0], lo, func(l control.LogLine) {
				if out.json() {
					_ = enc.Encode(l) // one object per line, so -f output can be piped
					return
				}
				fmt.Fprintf(o.Stdout, "%s %s  %s\n", l.Revision, l.Instance, l.Line)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&lo.Follow, "follow", "f", false, "keep streaming new lines until interrupted")
	f.StringVar(&lo.Revision, "revision", "", "only this revision's instances")
	f.BoolVar(&lo.Stderr, "stderr", false, "the instances' stderr instead of stdout")
	f.StringVar(&lo.Task, "task", revmeta.Task, "the task to read: a sidecar's name, or the main task")
	f.IntVar(&lo.Tail, "tail", 50, "lines per instance to start from")
	out.register(cmd)
	return cmd
}
