package control

import (
	"context"
	"net"
	"sort"
	"strconv"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/store"
)

// ScalerService is the Consul service every scaler replica registers as, at its admin
// address (scaler/leader.go).
const ScalerService = "rouse-scaler"

// Daemon is one gateway or scaler replica as Consul lists it: where its admin listener is
// (/metrics; /gauges on a gateway, /decisions on a scaler).
type Daemon struct {
	ID        string `json:"id"`
	Node      string `json:"node"`
	AdminAddr string `json:"admin_addr"` // host:port
	Passing   bool   `json:"passing"`    // its Consul checks pass
	// RoutesIndex is the Consul KV index of the route table a gateway serves (0 when it does
	// not report one, and for scalers).
	RoutesIndex uint64 `json:"routes_index,omitempty"`
}

// Gateways lists the registered gateways, passing or not, by ID.
func (c *Client) Gateways(ctx context.Context) ([]Daemon, error) {
	return c.daemons(ctx, gauges.GatewayService)
}

// Scalers lists the registered scaler replicas, passing or not, by ID.
func (c *Client) Scalers(ctx context.Context) ([]Daemon, error) {
	return c.daemons(ctx, ScalerService)
}

func (c *Client) daemons(ctx context.Context, name string) ([]Daemon, error) {
	es, meta, err := c.consul.Health().Service(name, "", false, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, c.consulErr(err, "service:read", name)
	}
	if len(es) == 0 && meta.ResultsFilteredByACLs {
		// Consul answers a service the token may not read with an empty list, not a 403:
		// say so rather than "none registered".
		return nil, &PermissionError{System: "consul", Capability: "service:read", Resource: name,
			TokenVar: "CONSUL_HTTP_TOKEN", NoToken: !c.consulToken, Detail: "results filtered by ACLs"}
	}
	out := make([]Daemon, 0, len(es))
	for _, e := range es {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		d := Daemon{ID: e.Service.ID, Node: e.Node.Node, AdminAddr: net.JoinHostPort(addr, strconv.Itoa(e.Service.Port)),
			Passing: e.Checks.AggregatedStatus() == consulapi.HealthPassing}
		d.RoutesIndex, _ = strconv.ParseUint(e.Service.Meta[gauges.MetaRoutesIndex], 10, 64)
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// JournalIndex is the Consul KV index of the route journal the gateways follow: a gateway
// whose RoutesIndex is below it has not loaded the latest route change yet.
func (c *Client) JournalIndex(ctx context.Context) (uint64, error) {
	_, meta, err := c.consul.KV().Keys(store.JournalPrefix, "", (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, c.consulErr(err, "key:read", store.JournalPrefix)
	}
	return meta.LastIndex, nil
}

// Failures are the wakes the scaler recorded as failed (store.Failure, with Nomad's reason),
// in namespace ns ("" = every namespace), newest first.
func (c *Client) Failures(ctx context.Context, ns string) ([]store.Failure, error) {
	fs, err := c.store.ListFailures(ctx)
	if err != nil {
		return nil, c.consulErr(err, "key:read", store.Prefix+"failures/")
	}
	out := fs[:0]
	for _, f := range fs {
		if ns == "" || f.Namespace == ns {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out, nil
}
