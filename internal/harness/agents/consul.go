package agents

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// ConsulOptions configure a Consul dev agent.
type ConsulOptions struct {
	Bin      string
	Dir      string // logs go here
	HTTPPort int    // 0 = pick a free one
	// ACL enables default-deny ACLs with ManagementToken as the initial management token.
	ACL             bool
	ManagementToken string
}

// Consul is a running Consul agent.
type Consul struct {
	*Process
	Addr  string // host:port of the HTTP API
	Token string // management token when ACLs are on
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
	// Every port is set so several clusters (parallel test packages) can share the machine.
	hcl := fmt.Sprintf(`ports { dns = -1 grpc = -1 grpc_tls = -1 serf_lan = %d serf_wan = %d server = %d }`, ports[1], ports[2], ports[3])
	if o.ACL {
		hcl += fmt.Sprintf(` acl { enabled = true default_policy = "deny" enable_token_persistence = false tokens { initial_management = %q agent = %q } }`, o.ManagementToken, o.ManagementToken)
	}
	args := []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(o.HTTPPort), "-hcl", hcl, "-log-level", "warn", "-node", "rouse-dev"}
	p, err := start("consul", o.Bin, filepath.Join(o.Dir, "consul.log"), args...)
	if err != nil {
		return nil, err
	}
	c := &Consul{Process: p, Addr: "127.0.0.1:" + strconv.Itoa(o.HTTPPort)}
	if o.ACL {
		c.Token = o.ManagementToken
	}
	cl, err := c.Client()
	if err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	err = waitFor(ctx, p, "a Consul leader", 30*time.Second, func() bool {
		l, err := cl.Status().Leader()
		if err != nil || l == "" {
			return false
		}
		// The catalog answers only once the node is registered.
		nodes, _, err := cl.Catalog().Nodes(nil)
		return err == nil && len(nodes) > 0
	})
	if err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return c, nil
}
