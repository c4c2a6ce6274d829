package scaler

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/gauges"
)

// gateway is one healthy gateway's admin listener.
type gateway struct {
	id   string // Consul service ID
	addr string // host:port of the admin listener
}

// gatewaySource finds the gateways to read.
type gatewaySource interface {
	Gateways(ctx context.Context) ([]gateway, error)
}

type consulGateways struct {
	c       *consulapi.Client
	service string
}

var _ gatewaySource = consulGateways{}

// gatewayWatcher is a gatewaySource that can also wait for the healthy gateways to
// change (a blocking query): the leader then starts its /activations long poll at a
// gateway as soon as the gateway passes its check, not at the next tick.
type gatewayWatcher interface {
	gatewaySource
	// WatchGateways answers once the list's index passes waitIndex (at once for 0).
	WatchGateways(ctx context.Context, waitIndex uint64) ([]gateway, uint64, error)
}

var _ gatewayWatcher = consulGateways{}

// gatewayWait bounds one blocking query for the gateways; Consul answers earlier on any change.
const gatewayWait = 5 * time.Minute

func (g consulGateways) Gateways(ctx context.Context) ([]gateway, error) {
	gws, _, err := g.WatchGateways(ctx, 0)
	return gws, err
}

func (g consulGateways) WatchGateways(ctx context.Context, waitIndex uint64) ([]gateway, uint64, error) {
	q := &consulapi.QueryOptions{WaitIndex: waitIndex}
	if waitIndex > 0 {
		q.WaitTime = gatewayWait
	}
	es, qm, err := g.c.Health().Service(g.service, "", true, q.WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("consul: healthy %s instances: %w", g.service, err)
	}
	out := make([]gateway, 0, len(es))
	for _, e := range es {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		out = append(out, gateway{id: e.Service.ID, addr: net.JoinHostPort(host, strconv.Itoa(e.Service.Port))})
	}
	return out, qm.LastIndex, nil
}

// fetchGauges reads /gauges from every gateway at once. A gateway that fails or is slow is
// left out with a warning, and counted so the maths know the data is partial.
func (s *Scaler) fetchGauges(ctx context.Context, gws []gateway) (reports []gauges.Report, failed int) {
	type answer struct {
		rep gauges.Report
		err error
	}
	answers := make([]answer, len(gws))
	var wg sync.WaitGroup
	for i, gw := range gws {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.GatewayTimeout)
			defer cancel()
			answers[i].rep, answers[i].err = s.getGauges(ctx, gw)
		})
	}
	wg.Wait()
	s.gwMu.Lock()
	defer s.gwMu.Unlock()
	if s.gwFailing == nil {
		s.gwFailing = map[string]bool{}
	}
	for i, a := range answers {
		gw := gws[i]
		if a.err != nil {
			failed++
			s.metrics.gatewayErrors.Inc()
			// Warn once per outage, not every tick.
			if ctx.Err() == nil && !s.gwFailing[gw.addr] {
				s.gwFailing[gw.addr] = true
				s.log.Warn("gateway left out of the ticks until it answers: its gauges could not be read; no revision scales down meanwhile",
					zap.String("gateway", gw.id), zap.String("addr", gw.addr), zap.Error(a.err))
			}
			continue
		}
		if s.gwFailing[gw.addr] {
			delete(s.gwFailing, gw.addr)
			s.log.Info("gateway answers again", zap.String("gateway", gw.id), zap.String("addr", gw.addr))
		}
		if a.rep.Gateway == "" {
			a.rep.Gateway = gw.id
		}
		reports = append(reports, a.rep)
	}
	return reports, failed
}

func (s *Scaler) getGauges(ctx context.Context, gw gateway) (gauges.Report, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+gw.addr+"/gauges", nil)
	if err != nil {
		return gauges.Report{}, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return gauges.Report{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return gauges.Report{}, fmt.Errorf("GET /gauges: %s", resp.Status)
	}
	return gauges.Read(resp.Body)
}
