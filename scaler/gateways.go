package scaler

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
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

func (g consulGateways) Gateways(ctx context.Context) ([]gateway, error) {
	es, _, err := g.c.Health().Service(g.service, "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul: healthy %s instances: %w", g.service, err)
	}
	out := make([]gateway, 0, len(es))
	for _, e := range es {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		out = append(out, gateway{id: e.Service.ID, addr: net.JoinHostPort(host, strconv.Itoa(e.Service.Port))})
	}
	return out, nil
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

// activationWait is how long one /activations long-poll may block at the gateway.
const activationWait = 30 * time.Second

// pollers keeps one /activations long-poll per healthy gateway while leading.
type pollers struct {
	mu      sync.Mutex
	running map[string]context.CancelFunc // by admin address
}

// track starts pollers for new gateways and stops those no longer healthy.
func (s *Scaler) trackGateways(ctx context.Context, gws []gateway) {
	p := &s.pollers
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running == nil {
		p.running = map[string]context.CancelFunc{}
	}
	keep := make(map[string]bool, len(gws))
	for _, gw := range gws {
		keep[gw.addr] = true
		if _, ok := p.running[gw.addr]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		p.running[gw.addr] = cancel
		go s.pollActivations(pctx, gw)
	}
	for addr, cancel := range p.running {
		if !keep[addr] {
			cancel()
			delete(p.running, addr)
		}
	}
}

func (s *Scaler) stopPollers() {
	p := &s.pollers
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, cancel := range p.running {
		cancel()
		delete(p.running, addr)
	}
}

// pollActivations long-polls one gateway's /activations and hands every answer to the
// fast path, so a revision at zero wakes without waiting for the tick.
func (s *Scaler) pollActivations(ctx context.Context, gw gateway) {
	var after uint64
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		seq, acts, err := s.getActivations(ctx, gw, after)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Debug("activations long-poll failed", zap.String("gateway", gw.id), zap.Error(err))
			s.sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		after = seq
		if len(acts) > 0 {
			s.onActivations(ctx, gw, acts)
		}
	}
}

func (s *Scaler) getActivations(ctx context.Context, gw gateway, after uint64) (uint64, []gauges.Activation, error) {
	ctx, cancel := context.WithTimeout(ctx, activationWait+5*time.Second)
	defer cancel()
	u := "http://" + gw.addr + "/activations?" + url.Values{
		"after": {strconv.FormatUint(after, 10)}, "wait": {activationWait.String()}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("GET /activations: %s", resp.Status)
	}
	return gauges.ReadActivations(resp.Body)
}

// sleep waits d on the injected clock, or until ctx ends.
func (s *Scaler) sleep(ctx context.Context, d time.Duration) {
	t := s.clock.NewTicker(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C():
	}
}
