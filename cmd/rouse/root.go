package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/control"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the operation failed (a revision that did not become ready, a denied token, …)
	exitUsage = 2 // the command line is wrong
)

// rootOptions is what every command shares: where output goes, the environment, and the
// global flags. Commands get it from their constructor; nothing is global.
type rootOptions struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string

	Namespace  string
	NomadAddr  string
	ConsulAddr string
	Domain     string
	// InternalDomain is the gateways' internal domain (internal services' URLs).
	InternalDomain string
}

// usageError is a mistake on the command line: exit 2 with a pointer to --help.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	o := &rootOptions{Stdout: stdout, Stderr: stderr, Getenv: getenv}
	root := newRootCmd(o)
	root.SetArgs(normalizeVarFlag(args))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	return reportError(o, cmd, err)
}

func newRootCmd(o *rootOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "rouse",
		Short: "Serverless services on Nomad and Consul",
		Long: `rouse runs HTTP services on HashiCorp Nomad and Consul the way Knative does on
Kubernetes: every change of a service's spec becomes an immutable revision, traffic is split
between revisions by percentage and tag, and each revision scales with its requests, down
to zero.

Connection settings come from the standard variables NOMAD_ADDR, NOMAD_TOKEN,
NOMAD_NAMESPACE, CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN, or from the flags below.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(o.Stdout)
	root.SetErr(o.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVarP(&o.Namespace, "namespace", "n", envOr(o.Getenv, "NOMAD_NAMESPACE", "default"), "Nomad namespace of the service (env NOMAD_NAMESPACE)")
	pf.StringVar(&o.NomadAddr, "nomad-addr", envOr(o.Getenv, "NOMAD_ADDR", "http://127.0.0.1:4646"), "Nomad HTTP API address (env NOMAD_ADDR)")
	pf.StringVar(&o.ConsulAddr, "consul-addr", envOr(o.Getenv, "CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul HTTP API address (env CONSUL_HTTP_ADDR)")
	pf.StringVar(&o.Domain, "domain", envOr(o.Getenv, "ROUSE_DOMAIN", "localhost"), "public domain of service URLs: http://<service>.<namespace>.<domain> (env ROUSE_DOMAIN)")
	pf.StringVar(&o.InternalDomain, "internal-domain", envOr(o.Getenv, "ROUSE_INTERNAL_DOMAIN", "internal"), "internal domain, served on the gateways' internal listener: http://<service>.<namespace>.<internal-domain> (env ROUSE_INTERNAL_DOMAIN)")

	root.AddGroup(&cobra.Group{ID: "deploy", Title: "Deploy and route:"}, &cobra.Group{ID: "read", Title: "Inspect:"},
		&cobra.Group{ID: "run", Title: "Run the platform:"})
	for _, c := range []*cobra.Command{newApplyCmd(o), newTrafficCmd(o), newRollbackCmd(o), newDeleteCmd(o), newGCCmd(o)} {
		c.GroupID = "deploy"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newListCmd(o), newDescribeCmd(o), newRevisionsCmd(o), newLogsCmd(o), newConsoleCmd(o)} {
		c.GroupID = "read"
		root.AddCommand(c)
	}
	for _, c := range platformCmds(o) {
		c.GroupID = "run"
		root.AddCommand(c)
	}
	root.AddCommand(newVersionCmd(o))
	return root
}

// platformCmds are the daemons rouse runs as.
func platformCmds(o *rootOptions) []*cobra.Command {
	return []*cobra.Command{newDevCmd(o), newGatewayCmd(o), newScalerCmd(o), newGuardCmd(o)}
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// apiClients builds the Nomad and Consul clients from the flags and the standard
// variables (TLS settings too: NOMAD_CACERT, CONSUL_CACERT, …). Nothing is dialled yet.
func (o *rootOptions) apiClients() (*nomadapi.Client, *consulapi.Client, error) {
	ncfg := nomadapi.DefaultConfig()
	ncfg.Address = o.NomadAddr
	ncfg.SecretID = o.Getenv("NOMAD_TOKEN")
	ncfg.Namespace = o.Namespace
	nc, err := nomadapi.NewClient(ncfg)
	if err != nil {
		return nil, nil, fmt.Errorf("nomad client for %s: %w (set NOMAD_ADDR)", o.NomadAddr, err)
	}
	ccfg := consulapi.DefaultConfig()
	ccfg.Address = o.ConsulAddr
	ccfg.Token = o.Getenv("CONSUL_HTTP_TOKEN")
	cc, err := consulapi.NewClient(ccfg)
	if err != nil {
		return nil, nil, fmt.Errorf("consul client for %s: %w (set CONSUL_HTTP_ADDR)", o.ConsulAddr, err)
	}
	return nc, cc, nil
}

// client connects the control plane to Nomad and Consul.
func (o *rootOptions) client() (*control.Client, error) {
	nc, cc, err := o.apiClients()
	if err != nil {
		return nil, err
	}
	consulAddr := o.ConsulAddr
	if !strings.Contains(consulAddr, "://") {
		consulAddr = "http://" + consulAddr
	}
	return control.New(control.Config{
		Nomad: nc, Consul: cc, NomadAddr: o.NomadAddr, ConsulAddr: consulAddr,
		NomadToken: o.Getenv("NOMAD_TOKEN") != "", ConsulToken: o.Getenv("CONSUL_HTTP_TOKEN") != "", Domain: o.Domain,
		InternalDomain: o.InternalDomain,
	}), nil
}

// isTTY reports whether w is a terminal (progress is animated only there).
func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// reportError prints err for a person and picks the exit code.
func reportError(o *rootOptions, cmd *cobra.Command, err error) int {
	w := o.Stderr
	var se silentError
	if errors.As(err, &se) {
		return exitError
	}
	var ue *usageError
	msg := err.Error()
	if errors.As(err, &ue) || strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "required flag") {
		fmt.Fprintf(w, "Error: %v\n", err)
		path := "rouse"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", path)
		return exitUsage
	}
	var diags hcl.Diagnostics
	if errors.As(err, &diags) {
		// Diagnostics from apply carry source ranges; the writer needs the parsed files,
		// which applyError prints itself. Here only what has no files left.
		fmt.Fprintf(w, "Error: %v\n", err)
		return exitError
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(w, "Interrupted.")
		return exitError
	}
	var rf *control.RevisionFailedError
	if errors.As(err, &rf) {
		fmt.Fprintf(w, "Error: %v\n", err)
		if len(rf.Events) > 0 {
			fmt.Fprintln(w, "Task events:")
			for _, e := range rf.Events {
				fmt.Fprintf(w, "  %s\n", e)
			}
		}
		if rf.Logs != "" {
			fmt.Fprintln(w, "Last log lines:")
			for _, l := range strings.Split(rf.Logs, "\n") {
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
		fmt.Fprintf(w, "The route is unchanged. Revision %s is stopped; `nomad job status %s` shows it until `rouse gc` removes it.\n", rf.Revision, rf.Revision)
		return exitError
	}
	fmt.Fprintf(w, "Error: %v\n", err)
	return exitError
}

// exactArgs is cobra.ExactArgs with a usage error and the argument names.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("expected %s, got %d argument(s)", strings.Join(names, " "), len(args))
		}
		return nil
	}
}
