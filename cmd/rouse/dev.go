package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rouse-run/rouse/cmd/rouse/devd"
	"github.com/rouse-run/rouse/console"
	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/gateway/certs"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/devenv"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/jobspec"
	"github.com/rouse-run/rouse/scaler"
)

// devOptions are `rouse dev`'s flags.
type devOptions struct {
	dir          string
	consulPort   int
	nomadPort    int
	listen       string
	adminListen  string
	scalerListen string
	// internalListen is the gateway's internal listener (a free loopback port by default).
	internalListen string
	// consoleListen is `rouse console`'s address ("" = no console).
	consoleListen string
	examples      []string
	vars          []string
	tls           bool
}

// newDevCmd runs the whole platform on this machine: Consul and Nomad dev agents, the
// gateway and the scaler, and optionally example services. Ctrl-C / SIGTERM (the command's
// context) stops everything it started.
func newDevCmd(o *rootOptions) *cobra.Command {
	d := devOptions{}
	cmd := &cobra.Command{
		Use:   "dev [-f service.hcl]... [-var name=value]...",
		Short: "Run Consul, Nomad, the gateway and the scaler on this machine",
		Long: `dev starts a Consul and a Nomad dev agent on 127.0.0.1 (raw_exec enabled, state and logs
in --dir), the gateway and the scaler, applies the given example specs, prints every address
and what to try next, and runs until Ctrl-C or SIGTERM. Then it stops the daemons, purges
every job so no instance is left behind, and stops the agents.`,
		Example: `  rouse dev
  rouse dev -f examples/hello/service.hcl -var bin=$PWD/bin`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), o, d) },
	}
	f := cmd.Flags()
	f.StringVar(&d.dir, "dir", ".dev", "folder for agent state and logs (emptied of old state at start)")
	f.IntVar(&d.consulPort, "consul-port", 8500, "Consul HTTP port")
	f.IntVar(&d.nomadPort, "nomad-port", 4646, "Nomad HTTP port")
	f.StringVar(&d.listen, "listen", "127.0.0.1:8080", "gateway public listener")
	f.StringVar(&d.adminListen, "admin-listen", "127.0.0.1:9090", "gateway admin listener (/gauges, /metrics)")
	f.StringVar(&d.scalerListen, "scaler-listen", "127.0.0.1:9091", "scaler admin listener (/metrics)")
	f.StringVar(&d.internalListen, "internal-listen", "127.0.0.1:0", "gateway internal listener: every service under --internal-domain, internal services only there (default a free loopback port, printed)")
	f.StringVar(&d.consoleListen, "console-listen", console.DefaultListen, "the web console (rouse console); empty: none")
	f.StringArrayVarP(&d.examples, "file", "f", nil, "service spec (file or folder) to apply once the platform is up; repeatable")
	f.StringArrayVar(&d.vars, "var", nil, "variable for the specs, name=value; repeatable")
	f.BoolVar(&d.tls, "tls", false, "serve the gateway over TLS (HTTP/2 and HTTP/1.1) with a certificate made for *.<namespace>.<domain>, signed by a CA of its own in <dir>/tls/ca.crt")
	return cmd
}

func runDev(ctx context.Context, o *rootOptions, d devOptions) error {
	vars := map[string]string{}
	for _, v := range d.vars {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return usagef("-var %q: expected name=value", v)
		}
		vars[k] = val
	}
	// Parse the examples before starting anything: a bad spec costs no agent start.
	specs := make([]*jobspec.Spec, 0, len(d.examples))
	sources := make([]string, 0, len(d.examples))
	for _, path := range d.examples {
		spec, files, diags := jobspec.ParseFiles([]string{path}, vars)
		if diags.HasErrors() {
			return printDiags(o, files, diags)
		}
		specs, sources = append(specs, spec), append(sources, sourceOf(files))
	}
	if _, err := agents.FindBinaries(); err != nil {
		return err
	}
	addrs := []string{d.listen, d.adminListen, d.scalerListen}
	if d.consoleListen != "" {
		addrs = append(addrs, d.consoleListen)
	}
	for _, addr := range addrs {
		if err := agents.CheckPortFree(addr); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(d.dir, "rouse.log")
	logger, err := devd.FileLogger(logPath)
	if err != nil {
		return err
	}
	defer logger.Sync()

	_, publicPort, _ := net.SplitHostPort(d.listen)
	urlDomain := o.Domain + ":" + publicPort
	fmt.Fprintf(o.Stdout, "rouse dev: gateway and scaler logs in %s\n", logPath)

	gcfg := gateway.Config{PublicAddr: d.listen, AdminAddr: d.adminListen, Domain: o.Domain,
		InternalAddr: d.internalListen, InternalDomain: o.InternalDomain,
		Logger: logger.Named("gateway"), Register: true, ID: "dev"}
	curlTLS, grpcTLS := "", "-plaintext"
	if d.tls {
		dc, err := devenv.WriteDevCert(filepath.Join(d.dir, "tls"), []string{"*." + o.Namespace + "." + o.Domain, o.Domain}, time.Now())
		if err != nil {
			return err
		}
		st, err := certs.New(certs.Options{Files: []certs.Pair{{CertFile: dc.CertFile, KeyFile: dc.KeyFile}}, Logger: logger.Named("certs")})
		if err != nil {
			return err
		}
		gcfg.TLS = st.TLSConfig()
		curlTLS, grpcTLS = "--cacert "+dc.CAFile+" ", "-cacert "+dc.CAFile
		fmt.Fprintf(o.Stdout, "rouse dev: serving https with a certificate for *.%s.%s; trust %s\n", o.Namespace, o.Domain, dc.CAFile)
	}
	var gwi *gateway.Gateway
	gw := devd.GatewayDaemon(gcfg, func(g *gateway.Gateway) { gwi = g })
	sc := devd.ScalerDaemon(scaler.Config{Logger: logger.Named("scaler"), AdminAddr: d.scalerListen, ID: "dev"}, nil)
	daemons := []devenv.Daemon{gw, sc}
	if d.consoleListen != "" {
		daemons = append(daemons, devd.ConsoleDaemon(console.Config{Listen: d.consoleListen, Namespace: o.Namespace, Logger: logger.Named("console")},
			func() control.Config { // after the gateway: its internal port is known
				_, internalPort, _ := net.SplitHostPort(gwi.InternalAddr())
				return control.Config{Domain: urlDomain, InternalDomain: o.InternalDomain + ":" + internalPort}
			}))
	}
	deploy := func(ctx context.Context, p devenv.Platform) ([]string, error) {
		_, internalPort, _ := net.SplitHostPort(gwi.InternalAddr())
		internalURLDomain := o.InternalDomain + ":" + internalPort
		c := control.New(control.Config{Nomad: p.Nomad, Consul: p.Consul, NomadAddr: p.NomadAddr,
			ConsulAddr: "http://" + p.ConsulAddr, Domain: urlDomain, InternalDomain: internalURLDomain})
		// The CLI in the other terminal needs the dev domain (its port) to print working URLs.
		hint := "export ROUSE_DOMAIN=" + urlDomain + " ROUSE_INTERNAL_DOMAIN=" + internalURLDomain
		if exe, err := os.Executable(); err == nil {
			hint += " PATH=" + filepath.Dir(exe) + ":$PATH"
		}
		hints := []string{hint}
		for i, spec := range specs {
			if spec.Namespace == "" {
				spec.Namespace = o.Namespace
			}
			fmt.Fprintf(o.Stdout, "rouse dev: applying %s\n", d.examples[i])
			prog := newProgress(o.Stdout, false)
			res, err := c.Apply(ctx, control.ApplyOptions{Spec: spec, Source: sources[i], Keep: control.DefaultKeep, Progress: prog.event})
			prog.close(err == nil)
			if err != nil {
				return nil, err
			}
			host := spec.Name + "." + spec.Namespace + "." + o.Domain
			internal := spec.Visibility == jobspec.VisibilityInternal
			if internal {
				host = spec.Name + "." + spec.Namespace + "." + o.InternalDomain
			}
			// "ready" must mean the curl line works: wait until the gateway's table has
			// caught up with the route apply wrote.
			if err := waitRouted(ctx, gwi, host, internal, res.Route); err != nil {
				return nil, err
			}
			if internal { // only the internal listener serves it
				hints = append(hints, fmt.Sprintf("curl -H 'Host: %s' http://%s/    # internal: not on the public listener", host, gwi.InternalAddr()),
					"rouse logs "+spec.Name+" -f    # its output, as requests arrive")
				continue
			}
			if spec.Protocol == revmeta.ProtocolH2C {
				hints = append(hints, fmt.Sprintf("grpcurl %s -authority %s %s list    # gRPC over HTTP/2 (h2c to the instances)", grpcTLS, host, d.listen))
			}
			if d.tls {
				hints = append(hints, fmt.Sprintf("curl %s--resolve %s:%s:127.0.0.1 https://%s:%s/    # HTTP/2 over TLS", curlTLS, host, publicPort, host, publicPort))
			} else {
				hints = append(hints, fmt.Sprintf("curl -H 'Host: %s' http://%s/    # or: curl %s", host, d.listen, res.URL))
			}
			hints = append(hints, "rouse logs "+spec.Name+" -f    # its output, as requests arrive")
		}
		if d.consoleListen != "" {
			hints = append(hints, "open http://"+d.consoleListen+"/    # the web console (rouse console)")
		}
		hints = append(hints, "rouse list", "rouse apply -f examples/autoscale/service.hcl -var bin=$PWD/bin")
		return hints, nil
	}
	// The Nomad client's meta.rouse_bin, the guard tasks' command, is this very binary: an
	// installed rouse needs no source tree to build one.
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return fmt.Errorf("the rouse binary's path (for the Nomad client's meta.%s): %w", revmeta.GuardBinMeta, err)
	}
	return devenv.Run(ctx, devenv.Config{
		Dir: d.dir, ConsulPort: d.consulPort, NomadPort: d.nomadPort, RouseBin: self,
		Daemons: daemons, Deploy: deploy, Out: o.Stdout, Logger: logger,
	})
}

// waitRouted waits (bounded) until the gateway serves host with exactly the route's revisions.
func waitRouted(ctx context.Context, g *gateway.Gateway, host string, internal bool, want []store.RouteTarget) error {
	wanted := map[string]bool{}
	for _, t := range want {
		if t.Percent > 0 {
			wanted[t.Revision] = true
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		lookup := g.Table().Lookup
		if internal {
			lookup = g.Table().LookupInternal
		}
		if r := lookup([]byte(host)); r != nil && len(r.Targets) == len(wanted) {
			ok := true
			for _, t := range r.Targets {
				ok = ok && wanted[t.Revision]
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the gateway did not pick up the route of %s within 30s: %w", host, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
