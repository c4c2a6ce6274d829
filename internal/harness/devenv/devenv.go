// Package devenv is the platform behind `rouse dev`: a Consul and a Nomad dev agent on
// loopback in a directory it owns, the daemons the caller hands it beside them (the gateway
// and scaler, wired in cmd/rouse/devd: this package imports nothing above internal/), an
// example deployed, and on cancel a teardown that leaves no alloc and no agent behind.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// Platform is what the daemons and the deploy step get: clients of the running agents.
type Platform struct {
	Dir        string
	ConsulAddr string
	NomadAddr  string
	Consul     *consulapi.Client
	Nomad      *nomadapi.Client
}

// Daemon is a long-running part (gateway, scaler). Start binds its listeners and returns
// the addresses to print; run serves until ctx is done and then drains.
type Daemon struct {
	Name  string
	Start func(ctx context.Context, p Platform) (run func(ctx context.Context) error, addrs map[string]string, err error)
}

// Config of one `rouse dev` run.
type Config struct {
	Dir        string // data and logs; emptied of old agent state at start
	ConsulPort int    // 8500 like `consul agent -dev`
	NomadPort  int    // 4646 like `nomad agent -dev`
	Daemons    []Daemon
	// RouseBin is the rouse binary the Nomad client advertises as meta.rouse_bin, the
	// command of the guard tasks (rouse dev passes itself); "" = agents.RouseBinary(dir).
	RouseBin string
	// Deploy runs once the daemons are up (e.g. apply examples/hello); its returned
	// lines are printed as "try" hints.
	Deploy func(ctx context.Context, p Platform) (hints []string, err error)
	Out    io.Writer
	Logger *zap.Logger
	// Ready, if set, is called once everything is up (tests use it).
	Ready func(p Platform)
}

// Run starts everything, blocks until ctx is cancelled, then stops everything it started.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	started := time.Now()
	bins, err := agents.FindBinaries()
	if err != nil {
		return err
	}
	for _, port := range []int{cfg.ConsulPort, cfg.NomadPort} {
		if err := agents.CheckPortFree("127.0.0.1:" + strconv.Itoa(port)); err != nil {
			return fmt.Errorf("port %d: %w (another Consul or Nomad agent? set --consul-port/--nomad-port)", port, err)
		}
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return err
	}
	// Old agent state would resurrect old jobs: every dev run starts clean, after ending
	// whatever a killed run left mounted or running there.
	if !agents.ReapDir(dir) {
		return fmt.Errorf("%s is in use by a running Nomad agent (another rouse dev?); stop it or pass --dir", dir)
	}
	if err := os.RemoveAll(filepath.Join(dir, "nomad-data")); err != nil {
		return fmt.Errorf("clean %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Out, "rouse dev: state and logs in %s\n", dir)

	startCtx, cancelStart := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelStart()
	consul, err := agents.StartConsul(startCtx, agents.ConsulOptions{Bin: bins.Consul, Dir: dir, HTTPPort: cfg.ConsulPort})
	if err != nil {
		return err
	}
	defer consul.Stop(10 * time.Second)
	fmt.Fprintf(cfg.Out, "  consul   http://%s   (log %s, pid %d)\n", consul.Addr, consul.LogFile, consul.PID())

	// With a Docker engine up, image services run too, with images kept on the node so
	// that a wake is a container start, never a pull (see agents.NomadOptions.Docker).
	pingCtx, cancelPing := context.WithTimeout(startCtx, 2*time.Second)
	docker := agents.NewDocker().Ping(pingCtx) == nil
	cancelPing()
	no := agents.NomadOptions{Bin: bins.Nomad, Dir: dir, HTTPPort: cfg.NomadPort, ConsulAddr: consul.Addr, Docker: docker}
	if cfg.RouseBin != "" {
		no.Meta = map[string]string{revmeta.GuardBinMeta: cfg.RouseBin}
	}
	nomad, err := agents.StartNomad(startCtx, no)
	if err != nil {
		return err
	}
	defer nomad.Stop(15 * time.Second)
	fmt.Fprintf(cfg.Out, "  nomad    %s   (log %s, pid %d)\n", nomad.Addr, nomad.LogFile, nomad.PID())

	p := Platform{Dir: dir, ConsulAddr: consul.Addr, NomadAddr: nomad.Addr}
	if p.Consul, err = consul.Client(); err != nil {
		return err
	}
	if p.Nomad, err = nomad.Client(); err != nil {
		return err
	}
	// Registered after the agents' Stop so it runs before them: no workload outlives Nomad.
	defer func() {
		pctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		if perr := agents.PurgeAll(pctx, p.Nomad, 40*time.Second); perr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", perr))
		}
	}()

	dctx, stopDaemons := context.WithCancel(context.Background())
	defer stopDaemons()
	done := make(chan error, len(cfg.Daemons))
	running := 0
	defer func() { // stop daemons first (they drain), before jobs are purged
		stopDaemons()
		for ; running > 0; running-- {
			if derr := <-done; derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	for _, d := range cfg.Daemons {
		run, addrs, err := d.Start(dctx, p)
		if err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
		running++
		go func(name string) {
			if err := run(dctx); err != nil {
				done <- fmt.Errorf("%s: %w", name, err)
				return
			}
			done <- nil
		}(d.Name)
		for _, k := range sortedKeys(addrs) {
			fmt.Fprintf(cfg.Out, "  %-8s %s   (%s)\n", d.Name, addrs[k], k)
		}
	}

	var hints []string
	if cfg.Deploy != nil {
		if hints, err = cfg.Deploy(ctx, p); err != nil {
			return fmt.Errorf("deploy example: %w", err)
		}
	}
	fmt.Fprintf(cfg.Out, "rouse dev: ready in %s. Use the platform from another terminal:\n", time.Since(started).Round(100*time.Millisecond))
	fmt.Fprintf(cfg.Out, "  export NOMAD_ADDR=%s CONSUL_HTTP_ADDR=%s\n", nomad.Addr, consul.Addr)
	for _, h := range hints {
		fmt.Fprintf(cfg.Out, "  %s\n", h)
	}
	fmt.Fprintln(cfg.Out, "Press Ctrl-C to stop everything.")
	if cfg.Ready != nil {
		cfg.Ready(p)
	}

	select {
	case <-ctx.Done():
		fmt.Fprintln(cfg.Out, "rouse dev: stopping (daemons, then every job, then the agents)...")
		return nil
	case derr := <-done:
		running--
		if derr == nil {
			derr = errors.New("a daemon stopped on its own")
		}
		return derr
	}
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
