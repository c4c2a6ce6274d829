package gateway

import (
	"context"
	"net"
	"strconv"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/watch"
)

// register adds this gateway to Consul as a "rouse-gateway" instance at its admin address,
// checked on /healthz, with the public address in its meta.
func (g *Gateway) register(ctx context.Context) error {
	ta := g.admLn.Addr().(*net.TCPAddr)
	checkHost, regAddr := ta.IP.String(), ta.IP.String()
	if ta.IP.IsUnspecified() {
		checkHost, regAddr = "127.0.0.1", "" // empty: Consul uses the node's address
	}
	reg := &consulapi.AgentServiceRegistration{
		ID: g.id, Name: watch.GatewayService, Address: regAddr, Port: ta.Port,
		Tags: []string{"rouse"},
		Meta: map[string]string{"public": g.PublicAddr(), "domain": g.cfg.Domain},
		Check: &consulapi.AgentServiceCheck{
			HTTP:                           "http://" + net.JoinHostPort(checkHost, strconv.Itoa(ta.Port)) + "/healthz",
			Interval:                       "2s",
			Timeout:                        "1s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if err := g.cfg.Consul.Agent().ServiceRegisterOpts(reg, consulapi.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return err
	}
	g.log.Info("registered in consul", zap.String("service", watch.GatewayService), zap.String("id", g.id))
	return nil
}

func (g *Gateway) deregister() {
	if err := g.cfg.Consul.Agent().ServiceDeregister(g.id); err != nil {
		g.log.Warn("cannot deregister from consul", zap.Error(err))
	}
}
