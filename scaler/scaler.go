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
// Beside the tick, it long-polls every gateway's /activations: a revision at zero that
// holds requests is scaled to what they need at once (the fast path from zero).
//
// A new leader starts from the counts Nomad has and scales nothing down before a full
// window of data.
package scaler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// Defaults for Config's zero values.
const (
	DefaultTick           = 2 * time.Second
	DefaultGatewayService = "rouse-gateway"
	DefaultLeaderKey      = "rouse/scaler/leader"
	DefaultSessionTTL     = 10 * time.Second
	DefaultCheckTTL       = 5 * time.Second
	DefaultLockDelay      = time.Millisecond
	DefaultGatewayTimeout = time.Second
	DefaultParallelScales = 16
)

// Config is everything `rouse scaler` takes.
type Config struct {
	Nomad  *nomadapi.Client  // required
	Consul *consulapi.Client // required
	Logger *zap.Logger       // nil: no logs
	Clock  Clock             // nil: the wall clock

	// Tick is how often the leader reads gauges and decides. Default 2 s.
	Tick time.Duration
	// AdminAddr is the listener for /metrics, /healthz and /decisions ("" = none;
	// ":0" picks a free port, see Scaler.AdminAddr).
	AdminAddr string
	// Namespaces are the Nomad namespaces whose revisions are scaled. Default ["*"]: all.
	Namespaces []string
	// ID names this replica in logs, the lock value and Nomad's scaling events.
	// Default hostname-pid.
	ID string

	GatewayService string        // Consul service of the gateways' admin listeners. Default rouse-gateway.
	GatewayTimeout time.Duration // per /gauges read. Default 1 s.
	LeaderKey      string        // Consul KV key of the leader lock. Default rouse/scaler/leader.
	SessionTTL     time.Duration // the leader session's TTL. Default 10 s.
	CheckTTL       time.Duration // the liveness check a crashed leader stops passing. Default 5 s.
	LockDelay      time.Duration // Consul lock-delay after a leader's session dies. Default 1 ms: Consul's own 15 s default would push takeover past 15 s.
	ParallelScales int           // Jobs.Scale / count reads in flight at once. Default 16.
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Clock == nil {
		c.Clock = WallClock{}
	}
	if c.Tick <= 0 {
		c.Tick = DefaultTick
	}
	if len(c.Namespaces) == 0 {
		c.Namespaces = []string{"*"}
	}
	if c.ID == "" {
		h, _ := os.Hostname()
		c.ID = h + "-" + strconv.Itoa(os.Getpid())
	}
	if c.GatewayService == "" {
		c.GatewayService = DefaultGatewayService
	}
	if c.GatewayTimeout <= 0 {
		c.GatewayTimeout = min(DefaultGatewayTimeout, c.Tick/2)
	}
	if c.LeaderKey == "" {
		c.LeaderKey = DefaultLeaderKey
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.CheckTTL <= 0 {
		c.CheckTTL = DefaultCheckTTL
	}
	if c.LockDelay <= 0 {
		c.LockDelay = DefaultLockDelay
	}
	if c.ParallelScales <= 0 {
		c.ParallelScales = DefaultParallelScales
	}
	return c
}

// Scaler is one replica.
type Scaler struct {
	cfg     Config
	log     *zap.Logger
	clock   Clock
	jobs    jobsAPI
	gws     gatewaySource
	elect   elector
	http    *http.Client
	metrics *metrics
	admin   net.Listener

	// watchJobs: list Nomad jobs with index-driven blocking queries (New) rather than
	// once per tick.
	watchJobs bool
	leading   atomic.Bool
	kick      chan struct{} // size 1: "tick now" (an activation for a revision not listed yet)
	pollers   pollers

	gwMu      sync.Mutex
	gwFailing map[string]bool // gateways whose outage was logged

	mu    sync.Mutex // guards table
	table *table
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
	s := &Scaler{
		cfg: cfg, log: cfg.Logger.With(zap.String("replica", cfg.ID)), clock: cfg.Clock,
		jobs: jobs, gws: gws,
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
	backoff := time.Second
	for ctx.Err() == nil {
		lost, err := s.elect.Campaign(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			s.log.Warn("leader election failed; retrying", zap.Error(err), zap.Duration("in", backoff))
			s.sleep(ctx, backoff)
			backoff = min(2*backoff, 15*time.Second)
			continue
		}
		backoff = time.Second
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
	s.mu.Lock()
	s.table = newTable(kpa.Options{Granularity: s.cfg.Tick}, s.log)
	s.mu.Unlock()
	s.leading.Store(true)
	s.metrics.leader.Set(1)
	defer func() {
		s.stopPollers()
		s.leading.Store(false)
		s.metrics.leader.Set(0)
		s.metrics.revisionStates.Store(nil) // a standby reports no revision
	}()
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
func (s *Scaler) tick(ctx context.Context, jobs func(context.Context) ([]*nomadapi.JobListStub, bool)) {
	start := s.clock.Now()
	defer func() { s.metrics.tickDuration.Observe(s.clock.Now().Sub(start).Seconds()) }()

	var (
		reports []gauges.Report
		failed  int
		stubs   []*nomadapi.JobListStub
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
		s.trackGateways(ctx, gws)
		reports, failed = s.fetchGauges(ctx, gws)
	})
	wg.Go(func() {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stubs, listed = jobs(lctx)
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
	need := s.table.sync(stubs)
	s.mu.Unlock()
	s.fetchCounts(ctx, need)

	now := s.clock.Now()
	var counts [kpa.NumReasons]int
	s.mu.Lock()
	data, partial, rpsPartial := s.table.observe(reports, failed)
	changed := s.table.decide(now, data, partial, rpsPartial, &counts)
	snap := s.table.snapshot()
	s.mu.Unlock()
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
func (s *Scaler) listJobs(ctx context.Context) ([]*nomadapi.JobListStub, bool) {
	var all []*nomadapi.JobListStub
	for _, ns := range s.cfg.Namespaces {
		stubs, _, err := s.jobs.List(ctx, ns, 0)
		if err != nil {
			s.log.Warn("listing revision jobs failed", zap.String("namespace", ns), zap.Error(err))
			return nil, false
		}
		all = append(all, stubs...)
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
// the latest want, so a fast-path scale-up and a tick's decision never land out of order.
func (s *Scaler) apply(ctx context.Context, r *revision) {
	r.scaleMu.Lock()
	defer r.scaleMu.Unlock()
	s.mu.Lock()
	want, from, d, known := r.want, r.nomad, r.last, r.countIndex != 0
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
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	idx, err := s.jobs.Scale(sctx, r.job, want, msg, meta)
	s.mu.Lock()
	defer s.mu.Unlock()
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
	s.log.Info("scaled", zap.String("namespace", r.job.ns), zap.String("job", r.job.id),
		zap.Int("from", from), zap.Int("to", want), zap.Stringer("reason", d.Reason),
		zap.Float64("stable", d.Stable), zap.Float64("panic_window", d.PanicValue), zap.Bool("panic", d.Panic))
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

// onActivations is the fast path: a gateway holds requests for revisions with no ready
// instance. Each one at zero (or below what they need) is scaled at once.
func (s *Scaler) onActivations(ctx context.Context, gw gateway, acts []gauges.Activation) {
	now := s.clock.Now()
	var wg sync.WaitGroup
	for _, a := range acts {
		s.mu.Lock()
		if s.table == nil {
			s.mu.Unlock()
			return
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
