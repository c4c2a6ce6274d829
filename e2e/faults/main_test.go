// Package faults proves what rouse does when parts of a real multi-node cluster fail
// under steady load (internal/harness/multinode: a Consul server, three Nomad servers,
// three worker nodes and two edge nodes, each node with its own Consul and Nomad agents;
// two `rouse gateway` and two `rouse scaler` processes on the edges). Each fault runs
// under load through both gateways and prints one row: requests, non-2xx, requests with
// no answer, and the time to full recovery.
//
// `make test` runs the short smoke subset (Test*); `make bench-chaos` runs every fault for
// longer (Benchmark*) and prints the table.
package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/harness/multinode"
)

// env is the cluster and rouse's daemons every test of the package shares.
var env *platform

type platform struct {
	c        *multinode.Cluster
	rouse    string // the built CLI
	apps     string // folder with the example binaries
	gateways []*multinode.Daemon
	scalers  []*multinode.Daemon
	rows     []row
	notes    []string // more lines for the table's foot (the parallel wakes)
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	c, err := multinode.Start(multinode.Options{Workers: 3, Edges: 2, NomadServers: 3})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p := &platform{c: c}
	code := 1
	defer func() {
		if code != 0 {
			c.DumpLogs(os.Stderr)
		}
		c.Stop()
	}()
	if err := p.start(); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	env = p
	code = m.Run()
	p.printRows(os.Stdout)
	return code
}

func (p *platform) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var err error
	if p.rouse, err = p.c.GoBuild("./cmd/rouse"); err != nil {
		return err
	}
	bin, err := p.c.GoBuild("./examples/autoscale")
	if err != nil {
		return err
	}
	p.apps = filepath.Dir(bin)
	if _, err := p.c.GoBuild("./gateway/internal/testbackend"); err != nil { // beside it
		return err
	}
	for i, e := range p.c.Edges {
		g, err := p.c.StartGateway(ctx, e, fmt.Sprintf("gw-%d", i+1), multinode.DaemonOptions{})
		if err != nil {
			return err
		}
		p.gateways = append(p.gateways, g)
	}
	for i, e := range p.c.Edges {
		s, err := p.c.StartScaler(ctx, e, fmt.Sprintf("scaler-%d", i+1), multinode.DaemonOptions{})
		if err != nil {
			return err
		}
		p.scalers = append(p.scalers, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.leader() == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("no scaler leads within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, svc := range services {
		if err := p.apply(svc.name, svc.autoscaling); err != nil {
			return err
		}
	}
	return nil
}

// leader is the scaler that leads, nil for none.
func (p *platform) leader() *multinode.Daemon {
	for _, s := range p.scalers {
		if ok, _ := s.Exited(); !ok && s.Leads() {
			return s
		}
	}
	return nil
}

// service is one service every fault's load goes to.
type service struct {
	name, autoscaling string
	instances         int // what it runs under the load (min = max), 0 for autoscaled
}

// services: three instances of steady (one per worker, by Nomad's anti-affinity), the
// only instance of single, and elastic autoscaled by the load (a short window, so that a
// wrong signal would show in its count within seconds).
var services = []service{
	{name: "steady", autoscaling: "min = 3\n    max = 3", instances: 3},
	{name: "single", autoscaling: "min = 1\n    max = 1", instances: 1},
	{name: "elastic", autoscaling: "min = 1\n    max = 12\n    target = 4\n    window = \"6s\"", instances: 0},
}

// apply deploys examples/autoscale as name through the CLI and waits for it.
func (p *platform) apply(name, autoscaling string) error {
	return p.applySpec(name, fmt.Sprintf(`service %q {
  command = "${var.bin}/autoscale"
  resources {
    cpu    = 20
    memory = 32
  }
  readiness { path = "/healthz" }
  autoscaling {
    %s
  }
}
`, name, autoscaling))
}

// applySpec applies the service block spec (its command under ${var.bin}, p.apps)
// through the CLI and waits for it.
func (p *platform) applySpec(name, spec string) error {
	spec = "variable \"bin\" {\n  type = string\n}\n" + spec
	f := filepath.Join(p.c.Dir, name+".hcl")
	if err := os.WriteFile(f, []byte(spec), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(p.rouse, "apply", "-f", f, "-var", "bin="+p.apps)
	cmd.Env = append(os.Environ(), p.c.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("rouse apply %s: %v\n%s", name, err, out)
	}
	return nil
}

// row is one fault's figures.
type row struct {
	fault                string
	requests, ok, non2xx int
	noAnswer             int
	codes                string
	p99, max             time.Duration
	recovery             time.Duration
	note                 string
}

func (p *platform) printRows(w *os.File) {
	defer func() {
		for _, n := range p.notes {
			fmt.Fprintln(w, n)
		}
	}()
	if len(p.rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%-34s %9s %7s %7s %9s %8s %8s %10s  %s\n", "FAULT", "REQUESTS", "NON2XX", "NOANS", "P99", "MAX", "RECOVERY", "CODES", "NOTE")
	for _, r := range p.rows {
		fmt.Fprintf(w, "%-34s %9d %7d %7d %9s %8s %8s %10s  %s\n", r.fault, r.requests, r.non2xx, r.noAnswer,
			r.p99.Round(time.Millisecond), r.max.Round(time.Millisecond), r.recovery.Round(100*time.Millisecond), r.codes, r.note)
	}
}

// fatalIf ends a test or benchmark on err.
func fatalIf(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
