package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/internal/harness/agents"
)

// versionInfo is `rouse version`: what the Go toolchain stamped into the binary.
type versionInfo struct {
	Version       string `json:"version"`
	Commit        string `json:"commit,omitempty"`
	Modified      bool   `json:"modified,omitempty"`
	Go            string `json:"go"`
	NomadVersion  string `json:"nomad_version"`  // tested against
	ConsulVersion string `json:"consul_version"` // tested against
}

func buildVersion() versionInfo {
	v := versionInfo{Version: "(devel)", Go: runtime.Version(), NomadVersion: agents.NomadVersion, ConsulVersion: agents.ConsulVersion}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func newVersionCmd(o *rootOptions) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print rouse's version",
		Args:  exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			v := buildVersion()
			if out.json() {
				return writeJSON(o.Stdout, v)
			}
			fmt.Fprintf(o.Stdout, "rouse %s", v.Version)
			if v.Commit != "" {
				c := v.Commit
				if len(c) > 12 {
					c = c[:12]
				}
				if v.Modified {
					c += "+dirty"
				}
				fmt.Fprintf(o.Stdout, " (%s)", c)
			}
			fmt.Fprintf(o.Stdout, " %s; for Nomad %s and Consul %s\n", v.Go, v.NomadVersion, v.ConsulVersion)
			return nil
		},
	}
	out.register(cmd)
	return cmd
}
