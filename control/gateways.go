package control

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/store"
)

// DefaultGatewayWait bounds how long a route change waits for the gateways to serve it.
const DefaultGatewayWait = 10 * time.Second

// awaitGateways waits until every passing gateway serves a route table at least as new as
// the KV index want (the write that changed the route), so that the URL printed next is
// served with the new route (Knative's "route ready"), and a deleted service's instances
// are stopped only once no gateway sends them requests. Gateways publish the KV index of
// the table they serve in their Consul service meta. It returns a warning naming the
// gateways that still lag after the wait; with no gateway registered, or a token that
// cannot read them, there is nothing to wait for.
func (c *Client) awaitGateways(ctx context.Context, want uint64) string {
	if c.gatewayWait <= 0 || want == 0 {
		return ""
	}
	wctx, cancel := context.WithTimeout(ctx, c.gatewayWait)
	defer cancel()
	var lagging []string
	var idx uint64
	for {
		entries, meta, err := c.consul.Health().Service(gauges.GatewayService, "", true,
			(&consulapi.QueryOptions{WaitIndex: idx, WaitTime: c.gatewayWait}).WithContext(wctx))
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil && len(lagging) > 0 {
				break // waited long enough
			}
			return ""
		}
		lagging = lagging[:0]
		for _, e := range entries {
			v, ok := e.Service.Meta[gauges.MetaRoutesIndex]
			if !ok {
				continue // a gateway that does not report its table
			}
			if n, _ := strconv.ParseUint(v, 10, 64); n < want {
				lagging = append(lagging, e.Service.ID)
			}
		}
		if len(lagging) == 0 {
			return ""
		}
		idx = meta.LastIndex
	}
	sort.Strings(lagging)
	return "gateway(s) " + strings.Join(lagging, ", ") + " did not load the route change within " + c.gatewayWait.String() + "; they serve the previous one until they catch up"
}

// routeWarnings waits for the gateways to serve the service's current record
// (awaitGateways) and returns its warning, if any, as a list for a result's Warnings.
func (c *Client) routeWarnings(ctx context.Context, ns, svc string) []string {
	pair, _, err := c.consul.KV().Get(store.ServiceKey(ns, svc), (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil || pair == nil {
		return nil
	}
	return warning(c.awaitGateways(ctx, pair.ModifyIndex))
}

// deletedRouteWarnings is routeWarnings after the service's record was deleted: the
// index to wait for is its tombstone's, which a listing of the key reports.
func (c *Client) deletedRouteWarnings(ctx context.Context, ns, svc string) []string {
	_, meta, err := c.consul.KV().Keys(store.ServiceKey(ns, svc), "", (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil
	}
	return warning(c.awaitGateways(ctx, meta.LastIndex))
}

func warning(w string) []string {
	if w == "" {
		return nil
	}
	return []string{w}
}
