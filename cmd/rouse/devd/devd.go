// Package devd wires rouse's daemons into the dev platform (internal/harness/devenv): a
// gateway and a scaler in this process, on the platform's Consul and Nomad. It is what
// `rouse dev` and the load test (examples/loadtest) run; it lives above gateway and
// scaler so that the harness under internal/ imports neither.
package devd

import (
	"context"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/console"
	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/devenv"
	"github.com/rouse-run/rouse/scaler"
)

// GatewayDaemon runs a gateway with cfg on the platform's Consul; started (may be nil)
// gets it once it listens, for callers that watch its route table.
func GatewayDaemon(cfg gateway.Config, started func(*gateway.Gateway)) devenv.Daemon {
	return devenv.Daemon{Name: "gateway", Start: func(_ context.Context, p devenv.Platform) (func(context.Context) error, map[string]string, error) {
		cfg.Consul = p.Consul
		g, err := gateway.New(cfg)
		if err != nil {
			return nil, nil, err
		}
		if started != nil {
			started(g)
		}
		addrs := map[string]string{"public": "http://" + g.PublicAddr(), "admin": "http://" + g.AdminAddr()}
		if a := g.InternalAddr(); a != "" {
			addrs["internal"] = "http://" + a
		}
		return g.Run, addrs, nil
	}}
}

// ScalerDaemon runs a scaler with cfg on the platform's Nomad and Consul.
func ScalerDaemon(cfg scaler.Config, started func(*scaler.Scaler)) devenv.Daemon {
	return devenv.Daemon{Name: "scaler", Start: func(_ context.Context, p devenv.Platform) (func(context.Context) error, map[string]string, error) {
		cfg.Nomad, cfg.Consul = p.Nomad, p.Consul
		s, err := scaler.New(cfg)
		if err != nil {
			return nil, nil, err
		}
		if started != nil {
			started(s)
		}
		return s.Run, map[string]string{"admin": "http://" + s.AdminAddr()}, nil
	}}
}

// ConsoleDaemon runs `rouse console` with cfg on the platform's Nomad and Consul. settings
// gives the control plane's settings (the URL domains, which may depend on the daemons
// started before it); the clients are the platform's.
func ConsoleDaemon(cfg console.Config, settings func() control.Config) devenv.Daemon {
	return devenv.Daemon{Name: "console", Start: func(_ context.Context, p devenv.Platform) (func(context.Context) error, map[string]string, error) {
		ctl := settings()
		ctl.Nomad, ctl.Consul, ctl.NomadAddr, ctl.ConsulAddr = p.Nomad, p.Consul, p.NomadAddr, "http://"+p.ConsulAddr
		cfg.Control = control.New(ctl)
		c, err := console.New(cfg)
		if err != nil {
			return nil, nil, err
		}
		return c.Run, map[string]string{"web": c.URL()}, nil
	}}
}

// FileLogger is a production (JSON) zap logger that writes to path: the daemons' log when
// a terminal is for the human.
func FileLogger(path string) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	cfg.OutputPaths, cfg.ErrorOutputPaths = []string{path}, []string{path}
	return cfg.Build()
}
