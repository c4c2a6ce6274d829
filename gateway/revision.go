package gateway

import (
	"hash/fnv"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/upstream"
	"github.com/rouse-run/rouse/gateway/watch"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// revision is the live state of one revision: config, instances, queue, counters. It
// outlives route-table swaps (keyed by namespace/revision).
type revision struct {
	g                  *Gateway
	key, ns, svc, name string
	cfg                atomic.Pointer[revmeta.Config]
	pool               *balance.Pool[*backend]
	// failure is the scaler's record that the revision's instances failed to start (nil:
	// none): until it expires, a request that finds no ready instance is answered at once.
	failure atomic.Pointer[revFailure]

	requests atomic.Uint64 // completed
	codes    sync.Map      // status code → *atomic.Uint64
	latency  prometheus.Observer
	cold     prometheus.Observer
	// access is the access log with namespace and revision encoded once, not per request.
	access *zap.Logger

	mu         sync.Mutex // guards the fields below; never taken on the fast path
	backends   map[string]*balance.Instance[*backend]
	last       *watch.Service
	shareN     int
	shareK     int
	candidates []*balance.Instance[*backend]
	probing    bool
	retired    bool
	// following: a blocking query of this revision's own service is running while it
	// wakes; minIndex is the Consul index of the newest endpoints applied, so an older
	// answer of the all-services watch cannot undo a newer one of the revision's own.
	following bool
	minIndex  uint64
}

// backend is one instance as the gateway talks to it.
type backend struct {
	id, addr  string
	pool      upstream.Pool // kept-alive connections
	probePath string        // under revision.mu
	status    string        // Consul's view, under revision.mu
	// seenPassing: Consul reported it passing at least once. Until then a good probe of
	// our own makes it routable; afterwards only Consul decides.
	seenPassing bool
	probedOK    atomic.Bool
	downPending atomic.Bool // a timer to bring it back is pending
	access      *zap.Logger // the revision's access log with the instance encoded once
}

func newBackend(id, addr string, access *zap.Logger) *backend {
	return &backend{id: id, addr: addr, pool: upstream.Pool{Addr: addr}, access: access.With(zap.String("instance", addr))}
}

func (g *Gateway) newRevision(cfg revmeta.Config) *revision {
	r := &revision{
		g: g, key: cfg.Namespace + "/" + cfg.Revision, ns: cfg.Namespace, svc: cfg.Service, name: cfg.Revision,
		backends: map[string]*balance.Instance[*backend]{}, shareN: 1,
	}
	r.cfg.Store(&cfg)
	r.pool = balance.NewPool[*backend](g.cfg.MaxHeld, r.queueBound(1))
	r.latency = g.metrics.duration.WithLabelValues(r.ns, r.svc, r.name)
	r.cold = g.metrics.coldStart.WithLabelValues(r.ns, r.svc, r.name)
	r.access = g.access.With(zap.String("namespace", r.ns), zap.String("revision", r.name))
	return r
}

func (r *revision) config() *revmeta.Config { return r.cfg.Load() }

// revFailure is a failure record as this gateway applies it.
type revFailure struct {
	at, retryAt time.Time // the record's: an unchanged record is not applied again
	until       time.Time // this gateway's end of the backoff
	err         *http1.Error
}

// setFailure applies the revision's failure record from Consul KV (nil: none). A record
// that is in force answers every held request at once when nothing is ready. A record
// for another spec of the same name (deleted and applied again) is not this revision's.
func (r *revision) setFailure(f *store.Failure, now time.Time) {
	if f != nil && f.SpecHash != "" && r.config().SpecHash != "" && f.SpecHash != r.config().SpecHash {
		f = nil
	}
	cur := r.failure.Load()
	if f == nil {
		if cur != nil {
			r.failure.Store(nil)
		}
		return
	}
	if cur != nil && cur.at.Equal(f.At) && cur.retryAt.Equal(f.RetryAt) {
		return
	}
	// RetryAt is the scaler's clock; RetryAfter from now bounds what a skewed clock adds.
	until := f.RetryAt
	if f.RetryAfter > 0 {
		if lim := now.Add(time.Duration(f.RetryAfter) * time.Second); lim.Before(until) {
			until = lim
		}
	}
	r.failure.Store(&revFailure{at: f.At, retryAt: f.RetryAt, until: until, err: &http1.Error{
		Status: 503, Reason: "revision_failed", Msg: "rouse: revision " + r.name + " failed to start: " + f.Reason + "\n"}})
	if !now.Before(until) {
		return
	}
	_, held, ready := r.pool.Stats()
	r.g.log.Warn("revision failed to start; answering its requests 503 until its backoff passes",
		zap.String("revision", r.key), zap.String("reason", f.Reason), zap.Time("until", until), zap.Int64("held", held))
	if ready == 0 {
		r.pool.FailAll() // each held request sees the failure (acquire)
	}
}

// failed is the answer for a request that finds no ready instance while the revision's
// failure record is in force, nil otherwise.
func (r *revision) failed(now time.Time) *failure {
	f := r.failure.Load()
	if f == nil || !now.Before(f.until) {
		return nil
	}
	if _, _, ready := r.pool.Stats(); ready > 0 {
		return nil
	}
	secs := (f.until.Sub(now) + time.Second - 1) / time.Second
	return &failure{f.err, strconv.FormatInt(int64(max(secs, 1)), 10)}
}

func (r *revision) setConfig(c revmeta.Config) {
	old := r.cfg.Load()
	if *old == c {
		return
	}
	r.cfg.Store(&c)
	r.mu.Lock()
	r.recomputeLocked()
	r.mu.Unlock()
}

// guarded says the revision's instances are behind rouse's guard, which a hard
// concurrency limit adds to the group (jobspec).
func (r *revision) guarded() bool { return r.config().Concurrency > 0 }

// timeout is the revision's request timeout.
func (r *revision) timeout() time.Duration {
	if t := r.config().Timeout; t > 0 {
		return t
	}
	return revmeta.DefaultTimeout
}

// activationTimeout is how long a request is held for this revision to wake.
func (r *revision) activationTimeout() time.Duration {
	return min(r.g.cfg.ActivationTimeout, r.timeout())
}

// queueBound is this gateway's share of the target burst capacity: requests that may
// wait for a slot while instances are ready but full.
func (r *revision) queueBound(n int) int {
	tbc := r.config().TargetBurstCapacity
	switch {
	case tbc < 0:
		return r.g.cfg.MaxHeld
	case tbc == 0:
		return 0
	}
	return int((int64(tbc) + int64(n) - 1) / int64(n))
}

func (r *revision) setShare(n, k int) {
	r.mu.Lock()
	r.shareN, r.shareK = n, k
	r.recomputeLocked()
	r.mu.Unlock()
}

// applyEndpoints takes Consul's view, as of index, of the revision's instances (nil: none).
func (r *revision) applyEndpoints(svc *watch.Service, index uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if index < r.minIndex {
		return
	}
	r.minIndex = index
	r.applyEndpointsLocked(svc)
}

func (r *revision) applyEndpointsLocked(svc *watch.Service) {
	if r.retired || (svc == r.last && svc != nil) {
		return
	}
	r.last = svc
	seen := map[string]bool{}
	if svc != nil {
		for _, ep := range svc.Endpoints {
			if ep.Namespace != "" && ep.Namespace != r.ns {
				continue
			}
			seen[ep.ID] = true
			in := r.backends[ep.ID]
			if in == nil || in.Backend.addr != ep.Addr {
				if in != nil {
					in.Backend.pool.CloseIdle()
				}
				in = balance.NewInstance(ep.ID, newBackend(ep.ID, ep.Addr, r.access))
				r.backends[ep.ID] = in
			}
			b := in.Backend
			if b.seenPassing && ep.Status != consulapi.HealthPassing {
				b.probedOK.Store(false)
			}
			b.status = ep.Status
			b.probePath = ep.ProbePath
			if ep.Status == consulapi.HealthPassing {
				b.seenPassing = true
			}
		}
	}
	for id := range r.backends {
		if !seen[id] {
			r.backends[id].Backend.pool.CloseIdle()
			delete(r.backends, id) // gone from Consul: no new request from now on
		}
	}
	r.recomputeLocked()
}

// recomputeLocked derives the routable set, each instance's share of the limit and the
// queue bounds, and hands them to the pool (which serves waiters at once).
func (r *revision) recomputeLocked() {
	if r.retired {
		return
	}
	ids := make([]string, 0, len(r.backends))
	for id := range r.backends {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var routable, cands []*balance.Instance[*backend]
	for _, id := range ids {
		in := r.backends[id]
		b := in.Backend
		switch {
		case b.status == consulapi.HealthPassing:
			routable = append(routable, in)
		case b.seenPassing:
			// was ready, Consul now says not: no traffic, no probing
		case b.probedOK.Load():
			routable = append(routable, in)
		default:
			cands = append(cands, in)
		}
	}
	shareLimits(routable, r.config().Concurrency, r.shareN, r.shareK)
	r.candidates = cands
	r.pool.SetBounds(r.g.cfg.MaxHeld, r.queueBound(r.shareN))
	r.pool.SetInstances(routable)
	if len(cands) > 0 {
		r.maybeProbeLocked()
	}
}

// shareLimits gives this gateway (index k of n) its slots on each instance of a revision
// whose hard limit is limit: floor(limit/n) each, and the limit%n remaining slots of an
// instance go to the gateways a hash of the instance's ID rotates to — so the gateways'
// slots on an instance add up to exactly the limit. A gateway left with no slot on any
// instance (more gateways than slots in the revision) takes one slot on one instance:
// requests must be servable from every gateway. The shares then add up to more than the
// limit; the instance's guard (guard/) holds what is beyond it, so the limit stays exact.
func shareLimits(ins []*balance.Instance[*backend], limit, n, k int) {
	if limit <= 0 {
		for _, in := range ins {
			in.SetLimit(0)
		}
		return
	}
	if n <= 1 {
		for _, in := range ins {
			in.SetLimit(int64(limit))
		}
		return
	}
	base, rem := limit/n, limit%n
	total := 0
	for _, in := range ins {
		s := base
		if (k-int(hash32(in.ID)%uint32(n))+n)%n < rem {
			s++
		}
		total += s
		if s == 0 {
			in.SetLimit(balance.NoSlots)
		} else {
			in.SetLimit(int64(s))
		}
	}
	if total == 0 && len(ins) > 0 {
		ins[(int(hash32(ins[0].ID)%uint32(len(ins)))+k)%len(ins)].SetLimit(1)
	}
}

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// retire stops a revision that left the route table: waiters get 503 at once.
func (r *revision) retire() {
	r.mu.Lock()
	r.retired = true
	for _, in := range r.backends {
		in.Backend.pool.CloseIdle()
	}
	r.mu.Unlock()
	r.pool.SetInstances(nil)
	r.pool.FailAll()
	r.g.metrics.forget(r)
}

func (r *revision) isRetired() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retired
}

// count records a finished request.
func (r *revision) count(code int, d time.Duration) {
	r.requests.Add(1)
	c, ok := r.codes.Load(code)
	if !ok {
		c, _ = r.codes.LoadOrStore(code, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)
	r.latency.Observe(d.Seconds())
}

// maybeFollow starts following the revision's own service while requests are held for
// it (see watch.FollowService); it stops once an instance is ready or nobody waits.
func (r *revision) maybeFollow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.following || r.retired || r.g.bgCtx == nil {
		return
	}
	r.following = true
	go watch.FollowService(r.g.bgCtx, r.g.cfg.Consul, r.g.log, r.g.clk, r.name, func(svc *watch.Service, index uint64) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if index >= r.minIndex {
			r.minIndex = index
			r.applyEndpointsLocked(svc)
		}
		_, waiting, ready := r.pool.Stats()
		stop := r.retired || waiting == 0 || ready > 0
		if stop {
			r.following = false
		}
		return stop
	})
}

// markDown takes an instance out of picking for a second: it refused a connection, or
// closed a new one unanswered (why, for the log).
func (r *revision) markDown(in *balance.Instance[*backend], why string) {
	if !in.Backend.downPending.CompareAndSwap(false, true) {
		return
	}
	in.SetDown(true)
	r.g.log.Warn("instance "+why+"; skipping it for 1s", zap.String("revision", r.key), zap.String("instance", in.Backend.addr))
	go func() {
		t := r.g.clk.NewTimer(time.Second)
		<-t.C()
		in.SetDown(false)
		in.Backend.downPending.Store(false)
		r.pool.Dispatch()
	}()
}
