package gateway

import (
	"context"
	"net"
	"strconv"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/watch"
	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/gauges"
)

// register adds this gateway to Consul as a "rouse-gateway" instance at its admin address,
// checked on /healthz, with the public address and the KV index of the route table it
// serves in its meta. Registering again only updates the meta: Consul keeps the check's
// status.
func (g *Gateway) register(ctx context.Context, routesIndex uint64) error {
	ta := g.admLn.Addr().(*net.TCPAddr)
	checkHost, regAddr := ta.IP.String(), ta.IP.String()
	if ta.IP.IsUnspecified() {
		checkHost, regAddr = "127.0.0.1", "" // empty: Consul uses the node's address
	}
	reg := &consulapi.AgentServiceRegistration{
		ID: g.id, Name: watch.GatewayService, Address: regAddr, Port: ta.Port,
		Tags: []string{"rouse"},
		Meta: map[string]string{"public": g.PublicAddr(), "domain": g.cfg.Domain,
			gauges.MetaRoutesIndex: strconv.FormatUint(routesIndex, 10)},
		Check: &consulapi.AgentServiceCheck{
			HTTP:                           "http://" + net.JoinHostPort(checkHost, strconv.Itoa(ta.Port)) + "/healthz",
			Interval:                       "2s",
			Timeout:                        "1s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if a := g.InternalAddr(); a != "" { // control warns when no gateway serves internal services
		reg.Meta[MetaInternal], reg.Meta["internal_domain"] = a, g.cfg.InternalDomain
	}
	if err := g.cfg.Consul.Agent().ServiceRegisterOpts(reg, consulapi.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return err
	}
	return nil
}

// publish keeps the routes index in this gateway's registration current, so that the
// CLI can wait for the route it wrote to be served. Coalesced: one registration at a
// time, with the newest index; retried each second while Consul refuses. sent is the index
// already registered. It returns when ctx ends (before deregistration).
func (g *Gateway) publish(ctx context.Context, sent uint64, done chan<- struct{}) {
	defer close(done)
	for {
		var retry clock.Timer
		var retryC <-chan time.Time
		if idx := g.routesIdx.Load(); idx != sent {
			if err := g.register(ctx, idx); err != nil {
				if ctx.Err() != nil {
					return
				}
				g.log.Warn("cannot publish the route table index in consul; retrying", zap.Uint64("kv_index", idx), zap.Error(err))
				retry = g.clk.NewTimer(time.Second)
				retryC = retry.C()
			} else {
				sent = idx
			}
		}
		select {
		case <-ctx.Done():
		case <-g.routesKick:
		case <-retryC:
		}
		if retry != nil {
			retry.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (g *Gateway) deregister() {
	if err := g.cfg.Consul.Agent().ServiceDeregister(g.id); err != nil {
		g.log.Warn("cannot deregister from consul", zap.Error(err))
	}
}
