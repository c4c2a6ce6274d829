package agents

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// Role is what kind of agent to run.
type Role int

const (
	// RoleDev is a dev agent: server and client in one, state in memory (Nomad: a dev
	// server that is its own client node).
	RoleDev Role = iota
	// RoleServer is a server only, its state on disk in Dir so that it survives a restart.
	RoleServer
	// RoleClient is a client agent that joins the servers: a node of a multi-node cluster.
	RoleClient
)

// ConsulOptions configure a Consul agent.
type ConsulOptions struct {
	Bin      string
	Dir      string // logs (and, but for a dev agent, data) go here
	HTTPPort int    // 0 = pick a free one
	// ACL enables default-deny ACLs with ManagementToken as the initial management token.
	ACL             bool
	ManagementToken string
	// Role is dev (default), server (one server, bootstrapping itself) or client.
	Role Role
	// Node is the agent's node name. Default rouse-dev.
	Node string
	// Join is the serf LAN address (host:port, Consul.SerfAddr) of a server, for a client.
	Join string
}

// Consul is a running Consul agent.
type Consul struct {
	*Process
	Addr     string // host:port of the HTTP API
	SerfAddr string // host:port of its serf LAN gossip (what clients join)
	Token    string // management token when ACLs are on
	Node     string

	o    ConsulOptions
	args []string
}

// Client returns an API client with the management token.
func (c *Consul) Client() (*consulapi.Client, error) {
	cfg := consulapi.DefaultConfig()
	cfg.Address = c.Addr
	cfg.Token = c.Token
	return consulapi.NewClient(cfg)
}

// StartConsul starts `consul agent -dev` on loopback and waits until it has a leader.
func StartConsul(ctx context.Context, o ConsulOptions) (*Consul, error) {
	return retryBind(func() (*Consul, error) { return startConsul(ctx, o) })
}

func startConsul(ctx context.Context, o ConsulOptions) (*Consul, error) {
	ports, err := FreePorts(4)
	if err != nil {
		return nil, err
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = ports[0]
	}
	if o.Node == "" {
		o.Node = "rouse-dev"
	}
	// Every port is set so several clusters (parallel test packages), and the agents of
	// one multi-node cluster, can share the machine.
	hcl := fmt.Sprintf(`ports { dns = -1 grpc = -1 grpc_tls = -1 serf_lan = %d serf_wan = %d server = %d }`, ports[1], ports[2], ports[3])
	if o.ACL {
		hcl += fmt.Sprintf(` acl { enabled = true default_policy = "deny" enable_token_persistence = false tokens { initial_management = %q agent = %q } }`, o.ManagementToken, o.ManagementToken)
	}
	args := []string{"agent", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(o.HTTPPort), "-hcl", hcl, "-log-level", "warn", "-node", o.Node}
	switch o.Role {
	case RoleDev:
		args = append(args, "-dev")
	case RoleServer:
		args = append(args, "-server", "-bootstrap-expect", "1", "-data-dir", filepath.Join(o.Dir, "consul-data"))
	case RoleClient:
		if o.Join == "" {
			return nil, fmt.Errorf("consul client %s: no server to join", o.Node)
		}
		args = append(args, "-data-dir", filepath.Join(o.Dir, "consul-data"), "-retry-join", o.Join, "-retry-interval", "1s")
	}
	c := &Consul{Addr: "127.0.0.1:" + strconv.Itoa(o.HTTPPort), SerfAddr: "127.0.0.1:" + strconv.Itoa(ports[1]), Node: o.Node, o: o, args: args}
	if o.ACL {
		c.Token = o.ManagementToken
	}
	if err := c.run(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// run starts the agent's process with its arguments and waits until it is usable: a
// leader known and this node in the catalog.
func (c *Consul) run(ctx context.Context) error {
	p, err := start("consul", c.o.Bin, filepath.Join(c.o.Dir, "consul.log"), c.args...)
	if err != nil {
		return err
	}
	c.Process = p
	cl, err := c.Client()
	if err != nil {
		p.Stop(5 * time.Second)
		return err
	}
	err = waitFor(ctx, p, "a Consul leader", 30*time.Second, func() bool {
		l, err := cl.Status().Leader()
		if err != nil || l == "" {
			return false
		}
		// The catalog answers only once the node is registered.
		nd, _, err := cl.Catalog().Node(c.Node, nil)
		return err == nil && nd != nil
	})
	if err != nil {
		p.Stop(5 * time.Second)
		return err
	}
	return nil
}

// Restart starts the agent again on the same ports and data, once its process has ended
// (Stop, Kill): a server comes back with its KV and catalog.
func (c *Consul) Restart(ctx context.Context) error {
	if ok, _ := c.Exited(); !ok {
		return fmt.Errorf("consul %s: restart of a running agent", c.Node)
	}
	return c.run(ctx)
}
