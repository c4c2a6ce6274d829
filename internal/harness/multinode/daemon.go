package multinode

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rouse-run/rouse/internal/harness/agents"
)

// Daemon is a `rouse gateway` or `rouse scaler` process on an edge node, talking to that
// node's Consul and Nomad agents.
type Daemon struct {
	*agents.Process
	Kind       string // "gateway" or "scaler"
	ID         string
	Node       *Node
	PublicAddr string // gateway: host:port of its public listener
	AdminAddr  string // host:port of its admin listener
}

// DaemonOptions tune a daemon beyond the cluster's defaults.
type DaemonOptions struct {
	Args []string // more flags, e.g. "--tick=1s"
}

// StartGateway starts `rouse gateway` on n (an edge node) with domain "localhost", access
// log off, registered in n's Consul agent as every gateway is, and waits until it answers
// on its admin listener.
func (c *Cluster) StartGateway(ctx context.Context, n *Node, id string, o DaemonOptions) (*Daemon, error) {
	ports, err := agents.FreePorts(2)
	if err != nil {
		return nil, err
	}
	d := &Daemon{Kind: "gateway", ID: id, Node: n, PublicAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), AdminAddr: "127.0.0.1:" + strconv.Itoa(ports[1])}
	args := append([]string{"gateway", "--consul-addr", n.Consul.Addr, "--domain", "localhost", "--id", id,
		"--listen", d.PublicAddr, "--admin-listen", d.AdminAddr, "--access-log=false", "--log-level", "warn"}, o.Args...)
	return d, c.startDaemon(ctx, d, args)
}

// StartScaler starts `rouse scaler` on n (an edge node), pointed at n's Nomad and Consul
// agents, and waits until it answers on its admin listener (leading or standing by).
func (c *Cluster) StartScaler(ctx context.Context, n *Node, id string, o DaemonOptions) (*Daemon, error) {
	ports, err := agents.FreePorts(1)
	if err != nil {
		return nil, err
	}
	d := &Daemon{Kind: "scaler", ID: id, Node: n, AdminAddr: "127.0.0.1:" + strconv.Itoa(ports[0])}
	args := append([]string{"scaler", "--consul-addr", n.Consul.Addr, "--nomad-addr", n.Nomad.Addr, "--id", id,
		"--admin-listen", d.AdminAddr, "--log-level", "info"}, o.Args...)
	return d, c.startDaemon(ctx, d, args)
}

func (c *Cluster) startDaemon(ctx context.Context, d *Daemon, args []string) error {
	bin, err := c.GoBuild("./cmd/rouse")
	if err != nil {
		return err
	}
	log := filepath.Join(d.Node.Dir, d.Kind+"-"+d.ID+".log")
	d.Process, err = agents.RetryBind(func() (*agents.Process, error) {
		p, err := agents.StartProcess(d.Kind+" "+d.ID, bin, log, args...)
		if err != nil {
			return nil, err
		}
		err = agents.WaitReady(ctx, p, d.Kind+" "+d.ID+" admin /healthz", 30*time.Second, func() bool {
			_, err := d.Get("/healthz")
			return err == nil
		})
		if err != nil {
			p.Kill()
			return nil, err
		}
		return p, nil
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.daemons = append(c.daemons, d)
	c.mu.Unlock()
	return nil
}

// Get fetches path from the daemon's admin listener and returns the body of a 200.
func (d *Daemon) Get(path string) (string, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + d.AdminAddr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %d %s", d.ID, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// Leads reports whether a scaler says it is the leader (/healthz: "ok <id> leader").
func (d *Daemon) Leads() bool {
	b, err := d.Get("/healthz")
	return err == nil && strings.Contains(b, " leader")
}

// Stop asks the daemon to stop (SIGINT, which rouse handles as SIGTERM: a gateway drains,
// a scaler hands its lease over) and kills it if it has not ended within grace. Kill is
// the crash.
func (d *Daemon) Stop(grace time.Duration) { d.Process.Stop(grace) }
