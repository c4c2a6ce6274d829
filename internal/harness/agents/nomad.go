package agents

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// NomadOptions configure a Nomad agent: a dev agent (server + client in one process), or a
// server or a client of a multi-node cluster.
type NomadOptions struct {
	Bin  string
	Dir  string // data_dir, config and log live here
	Role Role   // dev (default), server or client
	Name string // the agent's name (a client's node name); default the host's
	// Servers are the RPC addresses (Nomad.RPCAddr) of the servers, for a client; Join the
	// serf addresses (Nomad.SerfAddr) of the other servers and BootstrapExpect their number
	// with this one, for a server.
	Servers         []string
	Join            []string
	BootstrapExpect int
	// Heartbeat, for a server, is both min_heartbeat_ttl and heartbeat_grace: a client that
	// stops heartbeating is marked down about 2×Heartbeat later. 0 = Nomad's 10 s each.
	Heartbeat time.Duration
	// NodePool is a client's node pool ("" = default); DynamicPorts its [min, max]
	// dynamic port range, so that clients sharing the machine's loopback never hand out
	// the same port. Zero = Nomad's 20000–32000.
	NodePool     string
	DynamicPorts [2]int
	HTTPPort     int // 0 = pick a free one
	ConsulAddr   string
	ConsulToken  string
	ACL          bool // enable ACLs and bootstrap a management token
	// Docker keeps images on the node (see dockerPlugin) and waits until the docker driver
	// is detected and healthy too. The engine must answer before the agent starts: the
	// driver fingerprints it then.
	Docker bool
	// HostVolumes are the client's host_volume stanzas, by name: each a directory on this
	// machine (created if missing) that jobs mount with a `volume { type = "host" }`.
	HostVolumes map[string]HostVolume
	// Meta is the client's node meta (`client { meta { ... } }`), for a dev agent or a
	// client. StartNomad adds revmeta.GuardBinMeta = RouseBinary(Dir) when it is missing: rouse's
	// guard tasks run ${meta.rouse_bin}.
	Meta map[string]string
}

// HostVolume is one `client { host_volume "<name>" { path, read_only } }` of the agent.
type HostVolume struct {
	Path     string
	ReadOnly bool // the client refuses to mount it for writing
}

// hostVolumes is the client's host_volume stanzas, in name order.
func hostVolumes(vols map[string]HostVolume) (string, error) {
	names := make([]string, 0, len(vols))
	for n := range vols {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		v := vols[n]
		if err := os.MkdirAll(v.Path, 0o755); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  host_volume %q {\n    path      = %q\n    read_only = %t\n  }\n", n, v.Path, v.ReadOnly)
	}
	return b.String(), nil
}

// dockerPlugin is the docker driver's configuration. Nomad starts that driver on its own
// whenever a Docker engine answers, so every agent gets this block, not only those with
// NomadOptions.Docker.
//
// The dangling-container reconciler is always off: the harness's agents (one per test
// package, and rouse dev's) share the one dockerd of the machine, and the reconciler of
// each would remove the containers of all the others as "untracked" once they are 5
// minutes old. Each agent's own containers are removed when it stops (reap).
//
// With keepImages (NomadOptions.Docker) images stay on the node, image GC off: the
// cold-start targets assume the image is already there, as it is on a node that has run
// the revision before, so a wake is a container start and never a pull. What a test
// pushed is removed from the engine by whoever owns the registry (testcluster's Stop).
//
// Registries on 127.0.0.1 need nothing here: dockerd treats 127.0.0.0/8 registries as
// insecure-allowed, so plain-HTTP test registries on loopback pull without TLS.
func dockerPlugin(keepImages bool) string {
	return fmt.Sprintf(`
plugin "docker" {
  config {
    gc {
      image     = %t
      container = true
      dangling_containers { enabled = false }
    }
  }
}
`, !keepImages)
}

// Nomad is a running Nomad agent.
type Nomad struct {
	*Process
	Addr     string // http://host:port
	RPCAddr  string // host:port of its RPC (what clients name in Servers)
	SerfAddr string // host:port of its serf gossip (what servers join)
	Token    string // management token when ACLs are on
	Name     string

	dataDir string
	nodeID  string
	bin     string
	args    []string
	logFile string
}

// Restart starts a server again with its config and data once its process has ended
// (Kill, Stop): it rejoins the others with its Raft state. It returns once the agent's
// API answers.
func (n *Nomad) Restart(ctx context.Context) error {
	if ok, _ := n.Exited(); !ok {
		return fmt.Errorf("nomad %s: restart of a running agent", n.Name)
	}
	p, err := start("nomad", n.bin, n.logFile, n.args...)
	if err != nil {
		return err
	}
	n.Process = p
	cl, err := n.Client()
	if err != nil {
		return err
	}
	return waitFor(ctx, p, "the Nomad agent's API", 30*time.Second, func() bool {
		_, err := cl.Agent().Self()
		return err == nil
	})
}

// NodeID is a client's (or dev agent's) node ID; "" for a server.
func (n *Nomad) NodeID() string { return n.nodeID }

// Stop stops the agent, then ends whatever it started that outlived it (see reap).
func (n *Nomad) Stop(grace time.Duration) {
	n.Process.Stop(grace)
	reap(n.dataDir)
}

// DataDir is the agent's data_dir: every process that names it or holds a file under it
// (task helpers, workloads) belongs to this agent.
func (n *Nomad) DataDir() string { return n.dataDir }

// Workloads are the PIDs of what the agent started — task helpers (executor, logmon) and
// the tasks under them — found as reap finds them.
func (n *Nomad) Workloads() []int {
	var out []int
	for _, pid := range owned(n.dataDir) {
		if pid != n.PID() { // the agent holds its own state files under the data dir
			out = append(out, pid)
		}
	}
	return out
}

// Client returns an API client with the management token.
func (n *Nomad) Client() (*nomadapi.Client, error) {
	cfg := nomadapi.DefaultConfig()
	cfg.Address = n.Addr
	cfg.SecretID = n.Token
	return nomadapi.NewClient(cfg)
}

// StartNomad starts `nomad agent -dev` on loopback with raw_exec enabled and the cloud
// fingerprinters denied (they hang a dev client on machines without metadata services),
// and waits until its node is ready with raw_exec (and, with o.Docker, docker) healthy.
// A client (dev or client role) advertises meta.rouse_bin: o.Meta's, else RouseBinary(o.Dir).
func StartNomad(ctx context.Context, o NomadOptions) (*Nomad, error) {
	o, err := withRouseBin(o)
	if err != nil {
		return nil, err
	}
	return retryBind(func() (*Nomad, error) { return startNomad(ctx, o) })
}

// withRouseBin is o with Meta[revmeta.GuardBinMeta] set to RouseBinary(o.Dir) for an
// agent that runs a client and whose Meta has none; o's own map is left as it is.
func withRouseBin(o NomadOptions) (NomadOptions, error) {
	if o.Role == RoleServer {
		return o, nil
	}
	if _, ok := o.Meta[revmeta.GuardBinMeta]; ok {
		return o, nil
	}
	bin, err := RouseBinary(o.Dir)
	if err != nil {
		return o, fmt.Errorf("nomad client meta.%s: %w", revmeta.GuardBinMeta, err)
	}
	meta := make(map[string]string, len(o.Meta)+1)
	for k, v := range o.Meta {
		meta[k] = v
	}
	meta[revmeta.GuardBinMeta] = bin
	o.Meta = meta
	return o, nil
}

func startNomad(ctx context.Context, o NomadOptions) (*Nomad, error) {
	ports, err := FreePorts(3)
	if err != nil {
		return nil, err
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = ports[0]
	}
	dataDir, err := filepath.Abs(filepath.Join(o.Dir, "nomad-data"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	extra := ""
	if o.ACL {
		extra += "acl { enabled = true }\n"
	}
	if o.Name != "" {
		extra += fmt.Sprintf("name = %q\n", o.Name)
	}
	if o.Role == RoleServer {
		extra += serverBlock(o)
	} else {
		vols, err := hostVolumes(o.HostVolumes)
		if err != nil {
			return nil, err
		}
		extra += clientBlock(o, vols) + dockerPlugin(o.Docker)
	}
	cfg := fmt.Sprintf(`
data_dir  = %q
bind_addr = "127.0.0.1"
log_level = "WARN"
ports { http = %d  rpc = %d  serf = %d }
advertise { http = "127.0.0.1"  rpc = "127.0.0.1"  serf = "127.0.0.1" }
consul { address = %q  token = %q }
%s
`, dataDir, o.HTTPPort, ports[1], ports[2], o.ConsulAddr, o.ConsulToken, extra)
	cfgFile := filepath.Join(o.Dir, "nomad.hcl")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	args := []string{"agent", "-config", cfgFile}
	if o.Role == RoleDev {
		args = []string{"agent", "-dev", "-config", cfgFile}
	}
	logFile := filepath.Join(o.Dir, "nomad.log")
	p, err := start("nomad", o.Bin, logFile, args...)
	if err != nil {
		return nil, err
	}
	n := &Nomad{Process: p, Addr: "http://127.0.0.1:" + strconv.Itoa(o.HTTPPort), RPCAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		SerfAddr: "127.0.0.1:" + strconv.Itoa(ports[2]), Name: o.Name, dataDir: dataDir, bin: o.Bin, args: args, logFile: logFile}
	fail := func(err error) (*Nomad, error) { p.Stop(10 * time.Second); return nil, err }
	cl, err := n.Client()
	if err != nil {
		return fail(err)
	}
	if o.ACL {
		err = waitFor(ctx, p, "ACL bootstrap", 30*time.Second, func() bool {
			tok, _, err := cl.ACLTokens().Bootstrap(nil)
			if err != nil {
				return false
			}
			n.Token = tok.SecretID
			return true
		})
		if err != nil {
			return fail(err)
		}
		if cl, err = n.Client(); err != nil {
			return fail(err)
		}
	}
	if o.Role == RoleServer {
		// A server of several has no leader until the others are up: the cluster waits
		// for one. Here it is enough that the agent answers.
		err = waitFor(ctx, p, "the Nomad server's API", 30*time.Second, func() bool {
			_, err := cl.Agent().Self()
			return err == nil
		})
		if err != nil {
			return fail(err)
		}
		return n, nil
	}
	drivers := []string{"raw_exec"}
	if o.Docker {
		drivers = append(drivers, "docker")
	}
	err = waitFor(ctx, p, "a ready Nomad node with "+strings.Join(drivers, " and "), 60*time.Second, func() bool {
		nodes, _, err := cl.Nodes().List(nil)
		if err != nil {
			return false
		}
		for _, nd := range nodes {
			if (o.Name == "" || nd.Name == o.Name) && nd.Status == "ready" && healthy(nd, drivers) {
				n.nodeID = nd.ID
				return true
			}
		}
		return false
	})
	if err != nil {
		return fail(err)
	}
	return n, nil
}

// serverBlock is a server's configuration: bootstrap with the others, and the heartbeat
// timing that decides how soon a silent client is marked down.
func serverBlock(o NomadOptions) string {
	expect := max(o.BootstrapExpect, 1)
	join := make([]string, len(o.Join))
	for i, a := range o.Join {
		join[i] = strconv.Quote(a)
	}
	hb := ""
	if o.Heartbeat > 0 {
		hb = fmt.Sprintf("  min_heartbeat_ttl = %q\n  heartbeat_grace   = %q\n", o.Heartbeat, o.Heartbeat)
	}
	return fmt.Sprintf(`server {
  enabled          = true
  bootstrap_expect = %d
  server_join { retry_join = [%s]  retry_interval = "1s" }
%s}
`, expect, strings.Join(join, ", "), hb)
}

// clientBlock is a client's (or a dev agent's) client stanza.
func clientBlock(o NomadOptions, vols string) string {
	var b strings.Builder
	b.WriteString("client {\n")
	if o.Role == RoleClient {
		srv := make([]string, len(o.Servers))
		for i, a := range o.Servers {
			srv[i] = strconv.Quote(a)
		}
		fmt.Fprintf(&b, "  enabled = true\n  servers = [%s]\n", strings.Join(srv, ", "))
		if o.NodePool != "" {
			fmt.Fprintf(&b, "  node_pool = %q\n", o.NodePool)
		}
	}
	if o.DynamicPorts[1] > 0 {
		fmt.Fprintf(&b, "  min_dynamic_port = %d\n  max_dynamic_port = %d\n", o.DynamicPorts[0], o.DynamicPorts[1])
	}
	b.WriteString(`  network_interface = "lo"
  # kill_timeout is a revision's request timeout (up to 1h); the default cap of 30s would
  # cut long requests off on scale-down.
  max_kill_timeout  = "3600s"
  options { "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean" }
`)
	b.WriteString(metaBlock(o.Meta))
	b.WriteString(vols)
	b.WriteString("}\nplugin \"raw_exec\" { config { enabled = true } }\n")
	return b.String()
}

// metaBlock is the client stanza's node meta, in key order; "" for none.
func metaBlock(meta map[string]string) string {
	if len(meta) == 0 {
		return ""
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("  meta {\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "    %q = %q\n", k, meta[k])
	}
	b.WriteString("  }\n")
	return b.String()
}

// healthy reports whether every one of drivers is detected and healthy on the node.
func healthy(nd *nomadapi.NodeListStub, drivers []string) bool {
	for _, name := range drivers {
		if d := nd.Drivers[name]; d == nil || !d.Detected || !d.Healthy {
			return false
		}
	}
	return true
}

// PurgeAll stops every job in every namespace, waits (bounded) until every allocation is
// terminal, has the clients garbage-collect them (which destroys alloc dirs, their tmpfs
// mounts and the executor/logmon helpers) and then purges the jobs. Purging first would
// drop the allocations from the server's state at once, and a client never kills its
// tasks on shutdown: the workload processes would outlive the agent.
func PurgeAll(ctx context.Context, cl *nomadapi.Client, timeout time.Duration) error {
	q := (&nomadapi.QueryOptions{Namespace: "*"}).WithContext(ctx)
	jobs, _, err := cl.Jobs().List(q)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	for _, j := range jobs {
		w := (&nomadapi.WriteOptions{Namespace: j.Namespace}).WithContext(ctx)
		if _, _, err := cl.Jobs().Deregister(j.ID, false, w); err != nil {
			return fmt.Errorf("stop job %s: %w", j.ID, err)
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		allocs, _, err := cl.Allocations().List(q)
		if err != nil {
			return fmt.Errorf("list allocations: %w", err)
		}
		live := 0
		for _, a := range allocs {
			if a.ClientStatus == "running" || a.ClientStatus == "pending" {
				live++
			}
		}
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d allocations still running after %s", live, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if nodes, _, err := cl.Nodes().List(q); err == nil {
		for _, n := range nodes {
			_ = cl.Nodes().GC(n.ID, q)
		}
	}
	for _, j := range jobs {
		w := (&nomadapi.WriteOptions{Namespace: j.Namespace}).WithContext(ctx)
		_, _, _ = cl.Jobs().Deregister(j.ID, true, w)
	}
	return nil
}
