// Package scaler is `rouse scaler`: the loop that reads every gateway's concurrency
// gauges, decides with the KPA maths (scaler/kpa) how many instances each revision needs,
// and sets the Nomad group count through Jobs.Scale.
//
// Several replicas run; one leads through a Consul lock (LeaderKey) and the others wait.
// The leader, every Tick:
//
//  1. finds the healthy gateways in Consul (service GatewayService) and reads their
//     /gauges concurrently; one that fails is left out with a warning, and the tick is
//     marked partial so nothing scales down (or to zero) because of it;
//  2. takes the latest listing of the revision jobs (Jobs.List with meta per namespace,
//     run as an index-driven blocking query: re-listed only when Nomad changed, at most
//     once a tick); ready = the group's Running allocs from the job summary;
//  3. decides, and calls Jobs.Scale only for the counts that change, with a message and
//     meta that `nomad job history`/scaling events show.
//
// Beside the tick, it long-polls every healthy gateway's /activations (the gateways
// followed with a blocking query of Consul, so one is heard as soon as it passes its check):
// a revision at zero that holds requests is scaled to what they need at once (the
// activation path), read from Nomad first if the job listing does not have it yet. While a
// revision wakes with nothing ready it follows the revision's allocations; a wake whose
// every allocation failed is published to the gateways (a store.Failure in Consul KV, so
// they answer its held requests 503 with the reason at once), scaled back to 0 and not
// woken again before a backoff passes.
//
// A new leader starts from the counts Nomad has and scales nothing down before a full
// window of data.
//
// The files: config.go the Config and its defaults; scaler.go a replica's life and the
// tick; activation.go the activation path; failure.go (pure) and failwatch.go failed
// wakes; state.go the leader's table; jobwatch.go, gateways.go, nomad.go and leader.go its
// sources (Nomad's job list, the gateways' gauges, Jobs.Scale, the Consul lock).
package scaler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/internal/watchloop"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// Scaler is one replica.
type Scaler struct {
	cfg     Config
	log     *zap.Logger
	clock   clock.Clock
	jobs    jobsAPI     // inside conns
	conns   *nomadConns // the budget of requests in flight to Nomad
	gws     gatewaySource
	allocs  allocsAPI    // nil: failed wakes are not detected (tests of other things)
	fails   failureStore // nil: failures are not published
	elect   elector
	http    *http.Client
	metrics *metrics
	admin   net.Listener

	// watchJobs: list Nomad jobs with index-driven blocking queries (New) rather than
	// once per tick.
	watchJobs bool
	// watchGws: the gateways' long polls follow a blocking query of Consul (New), not the
	// tick's list.
	watchGws bool
	leading  atomic.Bool
	kick     chan struct{} // size 1: "tick now" (an activation for a revision Nomad did not give)
	pollers  pollers

	gwMu      sync.Mutex
	gwFailing map[string]bool // gateways whose outage was logged

	mu      sync.Mutex // guards table and leadCtx
	table   *table
	leadCtx context.Context // while leading: the context of work that lives as long as the leadership
}

// New checks the config and opens the admin listener; Run does the rest.
func New(cfg Config) (*Scaler, error) {
	if cfg.Nomad == nil || cfg.Consul == nil {
		return nil, errors.New("scaler: Config.Nomad and Config.Consul are required")
	}
	cfg = cfg.withDefaults()
	s, err := newScaler(cfg, nomadJobs{cfg.Nomad}, consulGateways{cfg.Consul, cfg.GatewayService})
	if err != nil {
		return nil, err
	}
	s.watchJobs = true
	_, s.watchGws = s.gws.(gatewayWatcher)
	s.allocs = nomadJobs{cfg.Nomad}
	s.fails = store.New(cfg.Consul)
	host, port := "", 0
	if s.admin != nil {
		host, port = adminHostPort(s.admin.Addr().String())
	}
	s.elect = &consulElector{
		c: cfg.Consul, log: s.log, clock: cfg.Clock, key: cfg.LeaderKey, id: cfg.ID,
		serviceID: "rouse-scaler-" + cfg.ID, sessionTTL: cfg.SessionTTL, checkTTL: cfg.CheckTTL,
		lockDelay: cfg.LockDelay, adminHost: host, adminPort: port,
	}
	return s, nil
}

// newScaler builds a replica on any Nomad and gateway source; New adds the Consul elector.
func newScaler(cfg Config, jobs jobsAPI, gws gatewaySource) (*Scaler, error) {
	cfg = cfg.withDefaults()
	conns := newNomadConns(cfg.MaxNomadConns)
	s := &Scaler{
		cfg: cfg, log: cfg.Logger.With(zap.String("replica", cfg.ID)), clock: cfg.Clock,
		jobs: gatedJobs{jobs, conns}, conns: conns, gws: gws,
		http: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
			MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute,
		}},
		metrics: newMetrics(),
		kick:    make(chan struct{}, 1),
	}
	if cfg.AdminAddr != "" {
		var err error
		if s.admin, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return nil, fmt.Errorf("scaler: admin listener: %w", err)
		}
	}
	return s, nil
}

// Run runs the replica until ctx ends: admin listener, leader election, and while
// leading, the loop. It returns nil on cancellation; errors on the way are logged and
// retried, never fatal.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// AdminAddr is the admin listener's address ("" without one).
func (s *Scaler) AdminAddr() string {
	if s.admin == nil {
		return ""
	}
	return s.admin.Addr().String()
}

// IsLeader reports whether this replica leads now.
func (s *Scaler) IsLeader() bool { return s.leading.Load() }

// Handler serves /metrics, /healthz and /decisions, for embedding in another server.
func (s *Scaler) Handler() http.Handler { return s.adminHandler() }

// Run is the replica's life; see the package function Run.
func (s *Scaler) Run(ctx context.Context) error {
	if s.admin != nil {
		srv := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(s.admin); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin listener stopped", zap.Error(err))
			}
		}()
		defer srv.Close()
	}
	defer s.elect.Close()
	s.log.Info("scaler started", zap.String("admin", s.AdminAddr()), zap.Duration("tick", s.cfg.Tick),
		zap.Strings("namespaces", s.cfg.Namespaces))
	backoff := watchloop.Backoff{Min: time.Second, Max: 15 * time.Second}
	for ctx.Err() == nil {
		lost, err := s.elect.Campaign(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			wait := backoff.Next()
			s.log.Warn("leader election failed; retrying", zap.Error(err), zap.Duration("in", wait))
			clock.Sleep(ctx, s.clock, wait)
			continue
		}
		backoff.Reset()
		s.log.Info("leading")
		s.metrics.leaderChanges.Inc()
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lost:
				cancel()
			case <-lctx.Done():
			}
		}()
		s.lead(lctx)
		cancel()
		s.elect.Resign()
		if ctx.Err() == nil {
			s.log.Warn("lost leadership; campaigning again")
		}
	}
	s.log.Info("scaler stopped")
	return nil
}

// lead is the leader's loop. Its state starts empty: counts are read from Nomad and the
// maths hold every count until their windows fill.
func (s *Scaler) lead(ctx context.Context) {
	stored := s.loadFailures(ctx)
	s.mu.Lock()
	s.table = newTable(kpa.Options{Granularity: s.cfg.Tick}, s.log)
	s.table.stored = stored
	s.leadCtx = ctx
	s.mu.Unlock()
	s.leading.Store(true)
	s.metrics.leader.Set(1)
	defer func() {
		s.stopPollers()
		s.leading.Store(false)
		s.metrics.leader.Set(0)
		s.metrics.revisionStates.Store(nil) // a standby reports no revision
	}()
	var bg sync.WaitGroup
	defer bg.Wait() // before stopPollers: nothing starts a poller after it
	if w, ok := s.gws.(gatewayWatcher); ok && s.watchGws {
		bg.Go(func() { s.watchGateways(ctx, w) })
	}
	jobs := s.listJobs
	if s.watchJobs {
		jobs = s.startJobWatch(ctx).jobs
	}
	t := s.clock.NewTicker(s.cfg.Tick)
	defer t.Stop()
	s.tick(ctx, jobs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-s.kick:
		}
		s.tick(ctx, jobs)
	}
}

// tick is one round: read, decide, scale. jobs gives the latest job listing.
func (s *Scaler) tick(ctx context.Context, jobs func(context.Context) (listing, bool)) {
	start := s.clock.Now()
	defer func() { s.metrics.tickDuration.Observe(s.clock.Now().Sub(start).Seconds()) }()

	var (
		reports []gauges.Report
		failed  int
		list    listing
		listed  bool
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		gws, err := s.gws.Gateways(ctx)
		if err != nil {
			// No gateway list is no data, not zero traffic: the maths hold every count.
			s.log.Warn("could not list gateways; holding counts", zap.Error(err))
			return
		}
		if !s.watchGws {
			s.trackGateways(ctx, gws)
		}
		reports, failed = s.fetchGauges(ctx, gws)
	})
	wg.Go(func() {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		list, listed = jobs(lctx)
	})
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	if !listed {
		s.log.Warn("no job listing from Nomad yet; skipping this tick")
		return
	}

	s.mu.Lock()
	need := s.table.sync(list)
	s.mu.Unlock()
	s.fetchCounts(ctx, need)

	now := s.clock.Now()
	var counts [kpa.NumReasons]int
	s.mu.Lock()
	data, partial, rpsPartial := s.table.observe(reports, failed)
	stale := s.failureTick(now)
	s.table.pruneLookups(now)
	changed := s.table.decide(now, data, partial, rpsPartial, &counts)
	snap := s.table.snapshot()
	s.mu.Unlock()
	s.deleteFailures(ctx, stale)
	for r, n := range counts {
		if n > 0 {
			s.metrics.decisions[r].Add(float64(n))
		}
	}
	s.metrics.revisionStates.Store(&snap)

	sem := make(chan struct{}, s.cfg.ParallelScales)
	var swg sync.WaitGroup
	for _, r := range changed {
		sem <- struct{}{}
		swg.Go(func() {
			defer func() { <-sem }()
			s.apply(ctx, r)
		})
	}
	swg.Wait()
}

// listJobs lists every namespace now: the tick's source when no watch runs (tests).
func (s *Scaler) listJobs(ctx context.Context) (listing, bool) {
	var all listing
	for i, ns := range s.cfg.Namespaces {
		stubs, idx, err := s.jobs.List(ctx, ns, 0)
		if err != nil {
			s.log.Warn("listing revision jobs failed", zap.String("namespace", ns), zap.Error(err))
			return listing{}, false
		}
		all.stubs = append(all.stubs, stubs...)
		if i == 0 || idx < all.index {
			all.index = idx
		}
	}
	return all, true
}

// fetchCounts reads the group count of revisions new to the table or changed by someone
// else since we last knew, a few at a time.
func (s *Scaler) fetchCounts(ctx context.Context, rs []*revision) {
	sem := make(chan struct{}, s.cfg.ParallelScales)
	var wg sync.WaitGroup
	for _, r := range rs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			n, idx, err := s.jobs.Count(cctx, r.job)
			s.mu.Lock()
			defer s.mu.Unlock()
			if err != nil {
				if e := err.Error(); ctx.Err() == nil && e != r.lastErr {
					r.lastErr = e
					s.log.Warn("could not read a revision's count; not scaling it until Nomad answers",
						zap.String("namespace", r.job.ns), zap.String("job", r.job.id), zap.Error(err))
				}
				return
			}
			s.table.setCount(r, n, idx)
		})
	}
	wg.Wait()
}

// apply sends a revision's wanted count to Nomad. One call per job at a time, and it sends
// the latest want, so an activation's scale-up and a tick's decision never land out of order.
func (s *Scaler) apply(ctx context.Context, r *revision) {
	r.scaleMu.Lock()
	defer r.scaleMu.Unlock()
	s.mu.Lock()
	want, from, d, known := r.want, r.nomad, r.last, r.countIndex != 0
	up := want > from && known
	if up {
		r.scalingUp = true // the failure watch waits for the allocations of the new count
	}
	var fail *store.Failure
	if d.Reason == kpa.Failed {
		fail = r.failure
	}
	s.mu.Unlock()
	if want == from || !known {
		return
	}
	dir := "up"
	if want < from {
		dir = "down"
	}
	msg := fmt.Sprintf("rouse scaler: %d → %d (%s): stable %.1f, panic-window %.1f", from, want, d.Reason, d.Stable, d.PanicValue)
	meta := map[string]any{"rouse.scaler": s.cfg.ID, "rouse.reason": d.Reason.String(),
		"rouse.stable": d.Stable, "rouse.panic_window": d.PanicValue, "rouse.panic": d.Panic}
	if fail != nil {
		msg = fmt.Sprintf("rouse scaler: %d → %d (%s): every allocation failed (%s); not started again before %s",
			from, want, d.Reason, fail.Reason, fail.RetryAt.UTC().Format(time.RFC3339))
		meta = map[string]any{"rouse.scaler": s.cfg.ID, "rouse.reason": d.Reason.String(), "rouse.retry_at": fail.RetryAt.UTC().Format(time.RFC3339)}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	idx, err := s.jobs.Scale(sctx, r.job, want, msg, meta)
	s.mu.Lock()
	defer s.mu.Unlock()
	if up {
		r.scalingUp = false
	}
	if err != nil {
		kind := scaleErrorKind(err)
		s.metrics.scales.WithLabelValues(dir, kind).Inc()
		// Forget the intent and re-read the count next tick; the maths decide again.
		r.want, r.countIndex = r.nomad, 0
		if e := err.Error(); e != r.lastErr && ctx.Err() == nil {
			r.lastErr = e
			s.log.Error("could not scale revision: "+scaleErrorHint(kind),
				zap.String("namespace", r.job.ns), zap.String("job", r.job.id),
				zap.Int("from", from), zap.Int("to", want), zap.String("kind", kind), zap.Error(err))
		}
		return
	}
	s.metrics.scales.WithLabelValues(dir, "ok").Inc()
	r.lastErr = ""
	r.nomad, r.countIndex = want, idx
	if up {
		// The allocations of this count are created after idx; until an instance is
		// ready, follow them so that a wake that fails is answered at once.
		r.wakeIndex = idx
		if from == 0 || r.gwReady == 0 { // (gwReady is of the last tick: stale when from is 0)
			s.watchLocked(r)
		}
	}
	s.log.Info("scaled", zap.String("namespace", r.job.ns), zap.String("job", r.job.id),
		zap.Int("from", from), zap.Int("to", want), zap.Stringer("reason", d.Reason),
		zap.Float64("stable", d.Stable), zap.Float64("panic_window", d.PanicValue), zap.Bool("panic", d.Panic))
}
