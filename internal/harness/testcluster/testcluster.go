// Package testcluster runs real Consul and Nomad agents on free loopback ports for the
// integration tests of one test package (started once in TestMain, not per test).
package testcluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/registry"
)

// Options choose what kind of cluster to start.
type Options struct {
	// ACL starts both agents with default-deny ACLs; Consul and Nomad are reachable with
	// the management tokens in Cluster.ConsulToken and Cluster.NomadToken.
	ACL bool
	// Docker gives the Nomad agent the docker driver, configured for tests (images stay on
	// the node; see agents.NomadOptions.Docker). The machine's Docker engine must answer on
	// its socket: without one the cluster fails to start, saying to run `make docker`.
	// Cluster.Stop removes every container of the agent's allocations.
	Docker bool
	// HostVolumes gives the Nomad client these host volumes (agents.NomadOptions.HostVolumes):
	// for the tests of `volume { type = "host" }`.
	HostVolumes map[string]agents.HostVolume
}

// Cluster is a running Consul + Nomad pair.
type Cluster struct {
	Dir         string // temp dir holding data, logs and built binaries
	ConsulAddr  string // host:port
	NomadAddr   string // http://host:port
	ConsulToken string // management tokens (ACL mode only)
	NomadToken  string
	Consul      *consulapi.Client
	Nomad       *nomadapi.Client

	consul *agents.Consul
	nomad  *agents.Nomad

	buildMu sync.Mutex
	built   map[string]string

	regMu sync.Mutex
	reg   *registry.Registry
}

// Start starts Consul, then Nomad pointed at it, and waits until both are usable.
func Start(opts Options) (*Cluster, error) {
	bins, err := agents.FindBinaries()
	if err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	agents.ReapStale(filepath.Join(os.TempDir(), "rouse-testcluster-*"), 10*time.Minute)
	dir, err := os.MkdirTemp("", "rouse-testcluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, built: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if opts.Docker {
		// Before Nomad starts: its docker driver fingerprints the engine once, at start.
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		err := agents.NewDocker().Ping(pctx)
		pcancel()
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("testcluster: Options.Docker: %w", err)
		}
	}
	co := agents.ConsulOptions{Bin: bins.Consul, Dir: dir, ACL: opts.ACL}
	if opts.ACL {
		co.ManagementToken = uuid()
	}
	if c.consul, err = agents.StartConsul(ctx, co); err != nil {
		c.Stop()
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	c.ConsulAddr, c.ConsulToken = c.consul.Addr, c.consul.Token
	if c.Consul, err = c.consul.Client(); err != nil {
		c.Stop()
		return nil, err
	}
	c.nomad, err = agents.StartNomad(ctx, agents.NomadOptions{Bin: bins.Nomad, Dir: dir, ConsulAddr: c.ConsulAddr, ConsulToken: c.ConsulToken, ACL: opts.ACL, Docker: opts.Docker, HostVolumes: opts.HostVolumes})
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	c.NomadAddr, c.NomadToken = c.nomad.Addr, c.nomad.Token
	if c.Nomad, err = c.nomad.Client(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Stop purges every job (so no workload process outlives the test), stops both agents by
// their PIDs (which removes any container of the agent's allocations still there), stops
// the cluster's registry and removes its images from the Docker engine, and removes the
// directory.
func (c *Cluster) Stop() {
	if c.nomad != nil {
		if c.Nomad != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			if err := agents.PurgeAll(ctx, c.Nomad, 40*time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "testcluster: cleanup: %v\n", err)
			}
			cancel()
		}
		c.nomad.Stop(15 * time.Second)
	}
	if c.consul != nil {
		c.consul.Stop(10 * time.Second)
	}
	c.stopRegistry()
	if os.Getenv("ROUSE_KEEP_TESTCLUSTER") == "" {
		os.RemoveAll(c.Dir)
	}
}

// DumpLogs writes the tail of both agents' logs, and of the registry's when one runs.
func (c *Cluster) DumpLogs(w io.Writer) {
	for _, p := range []*agents.Process{processOf(c.consul), processOf(c.nomad)} {
		if p != nil {
			fmt.Fprintf(w, "----- %s log (%s), last 8 KiB -----\n%s\n", p.Name, p.LogFile, p.TailLog(8192))
		}
	}
	c.regMu.Lock()
	defer c.regMu.Unlock()
	if c.reg != nil {
		fmt.Fprintf(w, "----- registry log (%s), last 8 KiB -----\n%s\n", c.reg.LogFile(), c.reg.TailLog(8192))
	}
}

func processOf[T interface{ *agents.Consul | *agents.Nomad }](a T) *agents.Process {
	switch v := any(a).(type) {
	case *agents.Consul:
		if v != nil {
			return v.Process
		}
	case *agents.Nomad:
		if v != nil {
			return v.Process
		}
	}
	return nil
}

// Run is a TestMain body: it starts a cluster into *dst, runs the tests, dumps the agent
// logs when a test failed, and stops the cluster. A cluster that cannot start fails the
// package (a missing binary is a failed setup, never a skip).
func Run(m *testing.M, opts Options, dst **Cluster) int {
	c, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*dst = c
	code := m.Run()
	if code != 0 {
		c.DumpLogs(os.Stderr)
	}
	c.Stop()
	return code
}

// GoBuild builds a main package of the rouse module (e.g. "./examples/hello") once per
// cluster and returns the binary's path.
func (c *Cluster) GoBuild(pkg string) (string, error) {
	c.buildMu.Lock()
	defer c.buildMu.Unlock()
	if p, ok := c.built[pkg]; ok {
		return p, nil
	}
	out := filepath.Join(c.Dir, "bin", strings.NewReplacer("/", "_", ".", "_").Replace(pkg))
	if err := agents.GoBuild(pkg, out); err != nil {
		return "", err
	}
	c.built[pkg] = out
	return out, nil
}

// GoBuildStatic builds a main package of the rouse module statically (CGO_ENABLED=0), to
// run in an image (registry.Image.Binary), once per cluster, and returns the binary's path.
func (c *Cluster) GoBuildStatic(pkg string) (string, error) {
	c.buildMu.Lock()
	defer c.buildMu.Unlock()
	key := "static:" + pkg
	if p, ok := c.built[key]; ok {
		return p, nil
	}
	out := filepath.Join(c.Dir, "bin", "static", strings.NewReplacer("/", "_", ".", "_").Replace(pkg))
	if err := registry.BuildStatic(pkg, out); err != nil {
		return "", err
	}
	c.built[key] = out
	return out, nil
}

// Registry returns the cluster's image registry (no auth, on a free loopback port, storage
// in the cluster dir), starting it on first use. Stop stops it and removes every image
// pulled from it from the Docker engine, so the engine does not fill up across runs.
func (c *Cluster) Registry(ctx context.Context) (*registry.Registry, error) {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	if c.reg != nil {
		return c.reg, nil
	}
	r, err := registry.Start(ctx, filepath.Join(c.Dir, "registry"))
	if err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	c.reg = r
	return r, nil
}

func (c *Cluster) stopRegistry() {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	if c.reg == nil {
		return
	}
	c.reg.Stop()
	d := agents.NewDocker()
	if _, err := os.Stat(d.Socket); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := d.RemoveImages(ctx, c.reg.Addr+"/"); err != nil {
			fmt.Fprintf(os.Stderr, "testcluster: cleanup: images of registry %s: %v\n", c.reg.Addr, err)
		}
		cancel()
	}
	c.reg = nil
}

// Env returns the environment variables that point rouse's CLI at this cluster.
func (c *Cluster) Env() []string {
	return []string{"NOMAD_ADDR=" + c.NomadAddr, "NOMAD_TOKEN=" + c.NomadToken,
		"CONSUL_HTTP_ADDR=" + c.ConsulAddr, "CONSUL_HTTP_TOKEN=" + c.ConsulToken}
}

// WaitPassing waits until Consul has exactly n passing instances of service and returns
// them.
func (c *Cluster) WaitPassing(t testing.TB, service string, n int) []*consulapi.ServiceEntry {
	t.Helper()
	var got []*consulapi.ServiceEntry
	poll.Until(t, 90*time.Second, fmt.Sprintf("%d passing instances of %s in Consul", n, service), func() error {
		es, _, err := c.Consul.Health().Service(service, "", true, nil)
		if err != nil {
			return err
		}
		got = es
		if len(es) != n {
			return fmt.Errorf("%d passing", len(es))
		}
		return nil
	})
	return got
}

// PurgeJobs removes every job, between tests that need a clean slate.
func (c *Cluster) PurgeJobs() error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	return agents.PurgeAll(ctx, c.Nomad, 40*time.Second)
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Lazy is a package's cluster started by the first test that asks for it, so that the
// package's pure tests do not wait for agents. Use Main as the TestMain body.
type Lazy struct {
	Options Options

	once sync.Once
	c    *Cluster
	err  error
}

// Get starts the cluster on first use and returns it; a cluster that cannot start fails
// t (a missing agent binary is a failed setup, never a skip).
func (l *Lazy) Get(t testing.TB) *Cluster {
	t.Helper()
	l.once.Do(func() { l.c, l.err = Start(l.Options) })
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.c
}

// Main runs the tests, dumps the agents' logs when one failed, and stops the cluster if a
// test started it.
func (l *Lazy) Main(m *testing.M) int {
	code := m.Run()
	if l.c != nil {
		if code != 0 {
			l.c.DumpLogs(os.Stderr)
		}
		l.c.Stop()
	}
	return code
}
