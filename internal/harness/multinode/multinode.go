// Package multinode runs a Consul and Nomad cluster of several nodes on this one machine,
// for the tests and benchmarks of failures and scale: a Consul server, one or three Nomad
// servers, worker nodes that run the workloads and edge nodes that run rouse's gateways
// and scalers. Each node is its own Consul client agent plus its own Nomad client agent,
// so a node can be lost (every agent and workload killed at once, as by a power cut) or
// paused (SIGSTOP, as by a partition) without touching the others.
//
// Everything listens on 127.0.0.1 with ports of its own; the Nomad clients hand out
// disjoint dynamic port ranges, so two nodes never give their instances the same port.
// Edge nodes are in the Nomad node pool "edge": rouse's jobs (pool default) never land
// there, and the daemons on them talk to their node's own agents, as a gateway on a real
// node talks to its local Consul and Nomad agents.
package multinode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// EdgePool is the Nomad node pool of the edge nodes.
const EdgePool = "edge"

// Options shape the cluster.
type Options struct {
	Workers      int // worker nodes (Nomad clients for workloads); default 3
	Edges        int // edge nodes (for gateways and scalers); default 2
	NomadServers int // 1 or 3; default 1
	// Heartbeat is the Nomad servers' min_heartbeat_ttl and heartbeat_grace: a lost node
	// is marked down, and its allocations replaced, about 2×Heartbeat after it went
	// silent. Default 3 s (Nomad's own is 10 s each).
	Heartbeat time.Duration
}

func (o *Options) defaults() {
	if o.Workers == 0 {
		o.Workers = 3
	}
	if o.Edges == 0 {
		o.Edges = 2
	}
	if o.NomadServers == 0 {
		o.NomadServers = 1
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 3 * time.Second
	}
}

// Node is one machine of the cluster: a Consul client agent and a Nomad client agent.
type Node struct {
	Name   string
	Dir    string
	Edge   bool
	Consul *agents.Consul
	Nomad  *agents.Nomad

	mu     sync.Mutex
	state  string // "up", "lost", "paused"
	paused []int  // the PIDs a Pause stopped
}

// State is "up", "lost" or "paused".
func (n *Node) State() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// Cluster is a running multi-node cluster.
type Cluster struct {
	Dir          string
	ConsulServer *agents.Consul
	NomadServers []*agents.Nomad
	Workers      []*Node
	Edges        []*Node
	// Consul is a client of the Consul server's agent; Nomad one of the first edge node's
	// Nomad agent (it survives the loss of any worker and of any one Nomad server).
	Consul *consulapi.Client
	Nomad  *nomadapi.Client

	opts    Options
	bins    agents.Binaries
	mu      sync.Mutex
	daemons []*Daemon
	built   map[string]string
}

// Start starts the Consul server, the Nomad servers, then every node, and waits until the
// Nomad servers have a leader and every node is ready in both Consul and Nomad.
func Start(opts Options) (*Cluster, error) {
	opts.defaults()
	if opts.NomadServers != 1 && opts.NomadServers != 3 {
		return nil, fmt.Errorf("multinode: %d Nomad servers: 1 or 3", opts.NomadServers)
	}
	bins, err := agents.FindBinaries()
	if err != nil {
		return nil, fmt.Errorf("multinode: %w", err)
	}
	agents.ReapStale(filepath.Join(os.TempDir(), "rouse-multinode-*"), 10*time.Minute)
	dir, err := os.MkdirTemp("", "rouse-multinode-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, opts: opts, bins: bins, built: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.start(ctx); err != nil {
		c.Stop()
		return nil, fmt.Errorf("multinode: %w", err)
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	// The nodes advertise the cluster's own rouse (the daemons' binary) as meta.rouse_bin,
	// the command of the guard tasks: built beside the servers' start, awaited before the
	// nodes'.
	type built struct {
		path string
		err  error
	}
	rouseBin := make(chan built, 1)
	go func() {
		p, err := c.GoBuild("./cmd/rouse")
		rouseBin <- built{p, err}
	}()
	var rb built
	awaited := false
	defer func() { // an early return still waits: Stop removes the directory it builds into
		if !awaited {
			<-rouseBin
		}
	}()
	var err error
	sdir := filepath.Join(c.Dir, "consul-server")
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		return err
	}
	c.ConsulServer, err = agents.StartConsul(ctx, agents.ConsulOptions{Bin: c.bins.Consul, Dir: sdir, Role: agents.RoleServer, Node: "consul-server"})
	if err != nil {
		return err
	}
	if c.Consul, err = c.ConsulServer.Client(); err != nil {
		return err
	}

	// Nomad servers: ports are known only once each has started, so each joins the ones
	// before it and the first is joined by the others.
	for i := range c.opts.NomadServers {
		d := filepath.Join(c.Dir, fmt.Sprintf("nomad-server-%d", i+1))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		var join []string
		for _, s := range c.NomadServers {
			join = append(join, s.SerfAddr)
		}
		s, err := agents.StartNomad(ctx, agents.NomadOptions{Bin: c.bins.Nomad, Dir: d, Role: agents.RoleServer,
			Name: fmt.Sprintf("nomad-server-%d", i+1), Join: join, BootstrapExpect: c.opts.NomadServers,
			Heartbeat: c.opts.Heartbeat, ConsulAddr: c.ConsulServer.Addr})
		if err != nil {
			return err
		}
		c.NomadServers = append(c.NomadServers, s)
	}
	if err := c.WaitNomadLeader(ctx, ""); err != nil {
		return err
	}

	rb, awaited = <-rouseBin, true
	if rb.err != nil {
		return rb.err
	}

	// Nodes start in parallel: each is a Consul client and a Nomad client of its own.
	type result struct {
		n   *Node
		err error
	}
	total := c.opts.Workers + c.opts.Edges
	results := make([]result, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			edge := i >= c.opts.Workers
			name := fmt.Sprintf("worker-%d", i+1)
			if edge {
				name = fmt.Sprintf("edge-%d", i-c.opts.Workers+1)
			}
			n, err := c.startNode(ctx, name, edge, i, rb.path)
			results[i] = result{n, err}
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range results {
		if r.n != nil {
			if r.n.Edge {
				c.Edges = append(c.Edges, r.n)
			} else {
				c.Workers = append(c.Workers, r.n)
			}
		}
		errs = append(errs, r.err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(c.Edges) > 0 {
		if c.Nomad, err = c.Edges[0].Nomad.Client(); err != nil {
			return err
		}
	} else if c.Nomad, err = c.NomadServers[0].Client(); err != nil {
		return err
	}
	return nil
}

// startNode starts one node's Consul client and Nomad client; i picks its dynamic ports,
// rouseBin is its meta.rouse_bin.
func (c *Cluster) startNode(ctx context.Context, name string, edge bool, i int, rouseBin string) (*Node, error) {
	d := filepath.Join(c.Dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	n := &Node{Name: name, Dir: d, Edge: edge, state: "up"}
	var err error
	n.Consul, err = agents.StartConsul(ctx, agents.ConsulOptions{Bin: c.bins.Consul, Dir: d, Role: agents.RoleClient, Node: name, Join: c.ConsulServer.SerfAddr})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	var servers []string
	for _, s := range c.NomadServers {
		servers = append(servers, s.RPCAddr)
	}
	no := agents.NomadOptions{Bin: c.bins.Nomad, Dir: d, Role: agents.RoleClient, Name: name, Servers: servers,
		ConsulAddr: n.Consul.Addr, DynamicPorts: [2]int{20000 + 1000*i, 20000 + 1000*i + 999},
		Meta: map[string]string{revmeta.GuardBinMeta: rouseBin}}
	if edge {
		no.NodePool = EdgePool
	}
	if n.Nomad, err = agents.StartNomad(ctx, no); err != nil {
		n.Consul.Stop(5 * time.Second)
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	return n, nil
}

// WaitNomadLeader waits until the Nomad servers agree on a leader other than not (an RPC
// address; "" for any).
func (c *Cluster) WaitNomadLeader(ctx context.Context, not string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if l, err := c.NomadLeader(); err == nil && l != nil && l.RPCAddr != not {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no Nomad leader (other than %q) within 60s; logs under %s", not, c.Dir)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// NomadLeader is the server that leads, asked of every live server in turn.
func (c *Cluster) NomadLeader() (*agents.Nomad, error) {
	var last error
	for _, s := range c.NomadServers {
		if ok, _ := s.Exited(); ok {
			continue
		}
		cl, err := s.Client()
		if err != nil {
			return nil, err
		}
		addr, err := cl.Status().Leader()
		if err != nil || addr == "" {
			last = fmt.Errorf("server %s: leader %q: %v", s.Name, addr, err)
			continue
		}
		for _, t := range c.NomadServers {
			if t.RPCAddr == addr {
				return t, nil
			}
		}
		return nil, fmt.Errorf("leader %s is not one of ours", addr)
	}
	if last == nil {
		last = errors.New("no live Nomad server")
	}
	return nil, last
}

// Lose kills the node as a power cut would: its Nomad agent, its Consul agent and every
// workload of its allocations, all with SIGKILL, nothing told first. It returns when they
// are dead. The node stays lost; its leftovers go at Stop.
func (c *Cluster) Lose(n *Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	signal(n.Nomad.Workloads(), syscall.SIGKILL) // before the agent dies: then its children are reparented
	n.Nomad.Kill()
	n.Consul.Kill()
	signal(n.Nomad.Workloads(), syscall.SIGKILL) // any the first pass raced with
	n.state = "lost"
}

// signal sends sig to every one of pids; one already gone is no matter.
func signal(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
}

// Pause stops the node (SIGSTOP to its agents and workloads): it is there but answers
// nothing, as a partitioned node is to the rest. Its sockets still accept connections,
// which then hang. Resume continues it.
func (c *Cluster) Pause(n *Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != "up" {
		return
	}
	n.paused = append([]int{n.Nomad.PID(), n.Consul.PID()}, n.Nomad.Workloads()...)
	signal(n.paused, syscall.SIGSTOP)
	n.state = "paused"
}

// Resume continues a paused node.
func (c *Cluster) Resume(n *Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != "paused" {
		return
	}
	signal(n.paused, syscall.SIGCONT)
	n.paused, n.state = nil, "up"
}

// RestartConsulServer stops the Consul server (SIGTERM-like interrupt: a server does not
// leave on it), starts it again on its ports and data, and waits until it leads again. It
// returns how long the server was away.
func (c *Cluster) RestartConsulServer(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	c.ConsulServer.Stop(10 * time.Second)
	if err := c.ConsulServer.Restart(ctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// KillNomadLeader SIGKILLs the leading Nomad server and returns it.
func (c *Cluster) KillNomadLeader() (*agents.Nomad, error) {
	l, err := c.NomadLeader()
	if err != nil {
		return nil, err
	}
	l.Kill()
	return l, nil
}

// RestartNomadServer starts a killed server again and waits until the servers have a
// leader: the cluster is whole for the next fault.
func (c *Cluster) RestartNomadServer(ctx context.Context, s *agents.Nomad) error {
	if err := s.Restart(ctx); err != nil {
		return err
	}
	return c.WaitNomadLeader(ctx, "")
}

// Nodes are the workers and edges, in that order.
func (c *Cluster) Nodes() []*Node { return append(append([]*Node{}, c.Workers...), c.Edges...) }

// Env points rouse's CLI at the cluster through the first edge node's agents.
func (c *Cluster) Env() []string {
	n := c.Edges[0]
	return []string{"NOMAD_ADDR=" + n.Nomad.Addr, "CONSUL_HTTP_ADDR=" + n.Consul.Addr}
}

// GoBuild builds a main package of the rouse module once per cluster.
func (c *Cluster) GoBuild(pkg string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.built[pkg]; ok {
		return p, nil
	}
	out := filepath.Join(c.Dir, "bin", filepath.Base(pkg))
	if err := agents.GoBuild(pkg, out); err != nil {
		return "", err
	}
	c.built[pkg] = out
	return out, nil
}

// Stop stops every daemon, resumes paused nodes, purges every job (so no workload outlives
// the test), stops every agent by its PID, ends what they left behind and removes the
// directory.
func (c *Cluster) Stop() {
	c.mu.Lock()
	ds := c.daemons
	c.daemons = nil
	c.mu.Unlock()
	for _, d := range ds {
		d.Stop(10 * time.Second)
	}
	for _, n := range c.Nodes() {
		c.Resume(n)
	}
	if cl := c.liveNomad(); cl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		if err := agents.PurgeAll(ctx, cl, 40*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "multinode: cleanup: %v\n", err)
		}
		cancel()
	}
	var wg sync.WaitGroup
	for _, n := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Nomad.Stop(15 * time.Second)
			n.Consul.Stop(10 * time.Second)
		}()
	}
	wg.Wait()
	for _, s := range c.NomadServers {
		s.Stop(10 * time.Second)
	}
	if c.ConsulServer != nil {
		c.ConsulServer.Stop(10 * time.Second)
	}
	agents.ReapDir(c.Dir)
	if os.Getenv("ROUSE_KEEP_TESTCLUSTER") == "" {
		os.RemoveAll(c.Dir)
	}
}

// liveNomad is a client of a Nomad agent that is up and can reach a leader.
func (c *Cluster) liveNomad() *nomadapi.Client {
	var cands []*agents.Nomad
	for _, n := range c.Edges {
		cands = append(cands, n.Nomad)
	}
	cands = append(cands, c.NomadServers...)
	for _, a := range cands {
		if a == nil {
			continue
		}
		if ok, _ := a.Exited(); ok {
			continue
		}
		cl, err := a.Client()
		if err != nil {
			continue
		}
		if l, err := cl.Status().Leader(); err == nil && l != "" {
			return cl
		}
	}
	return nil
}

// DumpLogs writes the tail of every agent's and daemon's log.
func (c *Cluster) DumpLogs(w io.Writer) {
	var ps []*agents.Process
	if c.ConsulServer != nil {
		ps = append(ps, c.ConsulServer.Process)
	}
	for _, s := range c.NomadServers {
		ps = append(ps, s.Process)
	}
	for _, n := range c.Nodes() {
		ps = append(ps, n.Consul.Process, n.Nomad.Process)
	}
	c.mu.Lock()
	for _, d := range c.daemons {
		ps = append(ps, d.Process)
	}
	c.mu.Unlock()
	for _, p := range ps {
		if p != nil {
			fmt.Fprintf(w, "----- %s log (%s), last 4 KiB -----\n%s\n", p.Name, p.LogFile, p.TailLog(4096))
		}
	}
}
