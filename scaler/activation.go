package scaler

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
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

// watchGateways keeps a long poll at every healthy gateway, following Consul's list of
// them with a blocking query until ctx ends: a gateway is heard from the moment it passes
// its check. Without it (a source that cannot block: tests) the tick tracks them.
func (s *Scaler) watchGateways(ctx context.Context, w gatewayWatcher) {
	watchloop.Run(ctx, watchloop.Config{
		Clock: s.clock, Backoff: watchloop.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second},
		OnError: func(err error, failures int, _ time.Duration) {
			if failures == 1 {
				s.log.Warn("watching the gateways failed; keeping the long polls as they are until Consul answers", zap.Error(err))
			}
		},
	}, func(ctx context.Context, index uint64) (uint64, error) {
		gws, next, err := w.WatchGateways(ctx, index)
		if err != nil {
			return 0, err
		}
		s.trackGateways(ctx, gws)
		return next, nil
	})
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
	s.table.setCount(r, count, idx)
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
		wg.Go(func() { s.activate(ctx, gw, a, now) })
	}
	wg.Wait()
}

// activate handles one revision's held requests.
func (s *Scaler) activate(ctx context.Context, gw gateway, a gauges.Activation, now time.Time) {
	k := revKey{a.Namespace, a.Revision}
	if !s.know(ctx, k, now) {
		// Not a revision Nomad has (or Nomad did not answer): the tick looks again.
		s.kickTick()
		return
	}
	s.mu.Lock()
	if s.table == nil {
		s.mu.Unlock()
		return
	}
	if r := s.table.byRev[k]; r != nil && r.inBackoff(now) {
		s.mu.Unlock()
		return // it failed to start: nothing wakes it before its backoff passes
	}
	r, from, up := s.table.activate(now, a)
	if up {
		markActivated(r, a.Held)
	}
	s.mu.Unlock()
	if r == nil {
		s.kickTick() // gone again meanwhile (a scale error forgot its count)
		return
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
			s.recheck(ctx, r, from, now)
		}
		return
	}
	s.log.Info("activating", zap.String("revision", a.Namespace+"/"+a.Revision), zap.Int64("held", a.Held),
		zap.Int("from", from), zap.String("gateway", gw.id))
	s.scaleActivated(ctx, r, now)
}

// know makes sure the table knows revision k and its count, reading the job from Nomad
// when it does not: the first activation of a revision registered since the last listing
// (autoscaling { initial = 0 }: apply routes a revision at zero ~20 ms after registering
// it, and the job watch lists at most once a tick), or of one whose count is not known
// yet. One read per revision at a time: an activation from a second gateway waits for
// it. A miss is not read again before lookupRetry. A revision in its failure backoff
// counts as known (nothing wakes it), and so does nothing outside the namespaces the
// scaler serves.
func (s *Scaler) know(ctx context.Context, k revKey, now time.Time) bool {
	s.mu.Lock()
	t := s.table
	if t == nil {
		s.mu.Unlock()
		return false
	}
	if r := t.byRev[k]; r != nil && (r.countIndex != 0 || r.inBackoff(now)) {
		s.mu.Unlock()
		return true
	}
	if !s.serves(k.ns) {
		s.mu.Unlock()
		return false
	}
	jk := jobKey{k.ns, k.rev} // a revision's job: its name, in its namespace
	if r := t.byRev[k]; r != nil {
		jk = r.job
	}
	l := t.lookups[k]
	switch {
	case l == nil || (!l.ended.IsZero() && now.Sub(l.ended) >= lookupRetry):
		l = &lookup{done: make(chan struct{})}
		t.lookups[k] = l
		s.mu.Unlock()
		s.lookUp(ctx, t, k, jk, l)
	case l.ended.IsZero():
		s.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return false
		}
	default:
		s.mu.Unlock()
		return false // read moments ago, and not there
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := t.byRev[k]
	return s.table == t && r != nil && (r.countIndex != 0 || r.inBackoff(now))
}

// lookUp reads job jk for revision k into table t (know).
func (s *Scaler) lookUp(ctx context.Context, t *table, k revKey, jk jobKey, l *lookup) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	stub, count, err := s.jobs.Job(cctx, jk)
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	l.ended = s.clock.Now()
	close(l.done)
	switch {
	case s.table != t: // leadership lost meanwhile
	case err != nil:
		s.log.Debug("could not read an activated revision's job; the tick will list it",
			zap.String("revision", k.String()), zap.Error(err))
	default:
		if r := t.learn(k, stub, count); r == nil {
			s.log.Debug("activated revision's job is no revision to scale", zap.String("revision", k.String()),
				zap.String("namespace", jk.ns), zap.String("job", jk.id))
		} else if r.unlisted {
			s.log.Info("read an activated revision the job listing does not have yet", zap.String("revision", k.String()),
				zap.Int("count", count))
		}
	}
}

// serves reports whether the scaler scales revisions in Nomad namespace ns.
func (s *Scaler) serves(ns string) bool {
	return slices.Contains(s.cfg.Namespaces, "*") || slices.Contains(s.cfg.Namespaces, ns)
}

// kickTick asks the leader's loop for a tick now.
func (s *Scaler) kickTick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
