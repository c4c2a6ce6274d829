package scaler

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/watchloop"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// The activation path: beside the tick, the leader long-polls every healthy gateway's
// /activations and scales a revision that holds requests at zero at once.

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
// activation path, so a revision at zero wakes without waiting for the tick. The
// activation sequence is the loop's index; the gateway blocks at 0 too (ZeroBlocks).
func (s *Scaler) pollActivations(ctx context.Context, gw gateway) {
	watchloop.Run(ctx, watchloop.Config{
		Clock: s.clock, Backoff: watchloop.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}, ZeroBlocks: true,
		OnError: func(err error, _ int, _ time.Duration) {
			s.log.Debug("activations long-poll failed", zap.String("gateway", gw.id), zap.Error(err))
		},
	}, func(ctx context.Context, after uint64) (uint64, error) {
		seq, acts, err := s.getActivations(ctx, gw, after)
		if err != nil {
			return 0, err
		}
		if len(acts) > 0 {
			s.onActivations(ctx, gw, acts)
		}
		return seq, nil
	})
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

// recheck reads a revision's count from Nomad and scales it up at once if it runs fewer
// than need instances.
func (s *Scaler) recheck(ctx context.Context, r *revision, need int, since time.Time) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	count, idx, err := s.jobs.Count(cctx, r.job)
	if err != nil {
		return // the tick will list it again
	}
	s.mu.Lock()
	if s.table == nil { // leadership lost meanwhile
		s.mu.Unlock()
		return
	}
	if idx > r.countIndex {
		s.table.setCount(r, count, idx)
	}
	up := r.nomad < need
	from := r.nomad
	if up {
		r.want = max(r.want, need)
		markActivated(r, int64(need))
	}
	s.mu.Unlock()
	if !up {
		return
	}
	s.log.Info("activating after an outside count change", zap.String("revision", r.key.ns+"/"+r.key.rev),
		zap.Int("from", from), zap.Int("to", need))
	s.scaleActivated(ctx, r, since)
}

// markActivated records on r (under s.mu) that its count was raised for held requests.
func markActivated(r *revision, held int64) {
	r.last = kpa.Decision{Desired: r.want, Reason: kpa.Activate, Stable: r.last.Stable, PanicValue: float64(held)}
}

// scaleActivated applies r's raised count and records the lag from the activation signal.
func (s *Scaler) scaleActivated(ctx context.Context, r *revision, since time.Time) {
	s.metrics.activations.Inc()
	s.apply(ctx, r)
	s.metrics.activationLag.Observe(s.clock.Now().Sub(since).Seconds())
}

// onActivations is the activation path: a gateway holds requests for revisions with no
// ready instance. Each one at zero (or below what they need) is scaled at once.
func (s *Scaler) onActivations(ctx context.Context, gw gateway, acts []gauges.Activation) {
	now := s.clock.Now()
	var wg sync.WaitGroup
	for _, a := range acts {
		s.mu.Lock()
		if s.table == nil {
			s.mu.Unlock()
			return
		}
		if r := s.table.byRev[revKey{a.Namespace, a.Revision}]; r != nil && r.inBackoff(now) {
			s.mu.Unlock()
			continue // it failed to start: nothing wakes it before its backoff passes
		}
		r, from, up := s.table.activate(now, a)
		if up {
			markActivated(r, a.Held)
		}
		s.mu.Unlock()
		if r == nil {
			// Not listed yet (a revision registered since the last tick): tick now.
			select {
			case s.kick <- struct{}{}:
			default:
			}
			continue
		}
		if !up {
			// We believe the count already covers the held requests. It may have been
			// changed from outside (nomad job scale) since the last listing: re-read it,
			// at most once a second per revision, rather than wait for the tick.
			s.mu.Lock()
			recheck := r.countIndex != 0 && now.Sub(r.rechecked) >= time.Second
			if recheck {
				r.rechecked = now
			}
			// Held requests and a count that should cover them: follow the allocations,
			// in case they are failing.
			s.watchLocked(r)
			s.mu.Unlock()
			if recheck {
				need := from
				wg.Go(func() { s.recheck(ctx, r, need, now) })
			}
			continue
		}
		s.log.Info("activating", zap.String("revision", a.Namespace+"/"+a.Revision), zap.Int64("held", a.Held),
			zap.Int("from", from), zap.String("gateway", gw.id))
		wg.Go(func() { s.scaleActivated(ctx, r, now) })
	}
	wg.Wait()
}
