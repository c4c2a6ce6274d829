// Package gateway is rouse's public edge: one hop between clients and app
// instances. It routes by host and tag with a weighted split, holds requests for a
// revision with no ready instance while it wakes (and tells scalers at once), enforces
// per-instance concurrency with a bounded FIFO queue, and serves gauges, activations and
// Prometheus metrics on a separate admin listener. See README.md in this folder.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/table"
	"github.com/rouse-run/rouse/gateway/upstream"
	"github.com/rouse-run/rouse/gateway/watch"
	"github.com/rouse-run/rouse/internal/clock"
)

// Gateway is one running gateway. New binds its listeners; Run serves until its context
// ends and closes them.
type Gateway struct {
	cfg    Config
	log    *zap.Logger
	access *zap.Logger
	clk    clock.Clock
	id     string
	tracer trace.Tracer // nil: tracing off

	pubLn, admLn net.Listener
	redirLn      net.Listener // plain HTTP answering 308 to https (nil: none)
	intLn        net.Listener // the internal listener (nil: none)
	httpsPort    string       // ":<public port>" in the redirect's Location, "" for 443
	admin        *fasthttp.Server

	bgCtx context.Context // background work (watches); set by Run before serving
	kv    *watch.KV
	eps   *watch.Endpoints
	peers *watch.Peers

	// routing is what the hot path reads: the table and its revisions, swapped whole.
	routing atomic.Pointer[routing]
	// routesIdx is the KV index of the table in routing; routesKick tells the publisher.
	routesIdx  atomic.Uint64
	routesKick chan struct{}
	stopPub    context.CancelFunc
	pubDone    chan struct{}
	// revs and shareN/shareK are owned by the updater goroutine.
	revs           map[string]*revision
	shareN, shareK int

	metrics *metrics

	actMu  sync.Mutex
	actSeq uint64
	actCh  chan struct{} // closed and replaced when actSeq moves

	draining  atomic.Bool
	drainHard chan struct{} // closed when the drain timeout passes: held requests give up
	stopAdmin chan struct{} // closed when the admin listener stops: long polls return
	fields    sync.Pool     // of *[]zap.Field, for access log lines
	runOnce   atomic.Bool

	h2         h2engine  // HTTP/2 from clients, h2c to instances
	h2bufs     sync.Pool // of *h2bufs
	conns      conns     // the public listener's client connections
	bufs       sync.Pool // of *connBufs
	streamBufs sync.Pool // of *[]byte, for request bodies that stream
}

// routing is one immutable table with its revisions' live state, index-aligned with
// tbl.Revisions().
type routing struct {
	tbl  *table.Table
	revs []*revision
}

// New validates cfg, binds the public and admin listeners and returns the gateway.
func New(cfg Config) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg: cfg, log: cfg.Logger, access: cfg.AccessLog, clk: cfg.Clock,
		revs: map[string]*revision{}, shareN: 1,
		actCh: make(chan struct{}), drainHard: make(chan struct{}), stopAdmin: make(chan struct{}),
		routesKick: make(chan struct{}, 1),
	}
	if cfg.TracerProvider != nil {
		g.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	if g.pubLn, err = net.Listen("tcp", cfg.PublicAddr); err != nil {
		return nil, fmt.Errorf("gateway: public listener: %w", err)
	}
	if g.admLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		g.pubLn.Close()
		return nil, fmt.Errorf("gateway: admin listener: %w", err)
	}
	if cfg.RedirectAddr != "" {
		if g.redirLn, err = net.Listen("tcp", cfg.RedirectAddr); err != nil {
			g.pubLn.Close()
			g.admLn.Close()
			return nil, fmt.Errorf("gateway: redirect listener: %w", err)
		}
		if port := strconv.Itoa(g.pubLn.Addr().(*net.TCPAddr).Port); port != "443" {
			g.httpsPort = ":" + port
		}
	}
	if cfg.InternalAddr != "" {
		if g.intLn, err = net.Listen("tcp", cfg.InternalAddr); err != nil {
			g.closeListeners()
			return nil, fmt.Errorf("gateway: internal listener: %w", err)
		}
	}
	g.id = cfg.ID
	if g.id == "" {
		g.id = defaultID(g.pubLn.Addr())
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if g.metrics, err = newMetrics(reg, g); err != nil {
		g.closeListeners()
		return nil, err
	}
	g.kv = watch.NewKV(cfg.Consul, g.log, g.clk, func() { g.metrics.watchErrors.WithLabelValues("kv").Inc() })
	g.eps = watch.NewEndpoints(cfg.Consul, g.log, g.clk, func() { g.metrics.watchErrors.WithLabelValues("endpoints").Inc() })
	if cfg.Register {
		g.peers = watch.NewPeers(cfg.Consul, g.log, g.clk, func() { g.metrics.watchErrors.WithLabelValues("peers").Inc() })
	}
	g.conns.set = map[*conn]struct{}{}
	g.newH2()
	g.admin = g.newAdminServer()
	return g, nil
}

func (g *Gateway) closeListeners() {
	for _, ln := range []net.Listener{g.pubLn, g.admLn, g.redirLn, g.intLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// RedirectAddr is the bound redirect listener's address ("" without one).
func (g *Gateway) RedirectAddr() string {
	if g.redirLn == nil {
		return ""
	}
	return g.redirLn.Addr().String()
}

// InternalAddr is the bound internal listener's address ("" without one).
func (g *Gateway) InternalAddr() string {
	if g.intLn == nil {
		return ""
	}
	return g.intLn.Addr().String()
}

// PublicAddr is the bound public address.
func (g *Gateway) PublicAddr() string { return g.pubLn.Addr().String() }

// AdminAddr is the bound admin address.
func (g *Gateway) AdminAddr() string { return g.admLn.Addr().String() }

// ID is the gateway's name in gauges and in Consul.
func (g *Gateway) ID() string { return g.id }

// RoutesIndex is the Consul KV index of the route table being served (0 before the
// first).
func (g *Gateway) RoutesIndex() uint64 { return g.routesIdx.Load() }

// Table is the route table being served (nil before the first read of Consul KV).
func (g *Gateway) Table() *table.Table {
	if r := g.routing.Load(); r != nil {
		return r.tbl
	}
	return nil
}

// Run serves until ctx is done, then drains: it stops accepting, lets in-flight requests
// finish for up to DrainTimeout, and returns nil. It returns an error only if a listener
// fails.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.runOnce.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	g.bgCtx = watchCtx
	var bg sync.WaitGroup
	for _, f := range []func(context.Context){g.kv.Run, g.eps.Run, g.update} {
		bg.Add(1)
		go func() { defer bg.Done(); f(watchCtx) }()
	}
	if g.peers != nil {
		bg.Add(1)
		go func() { defer bg.Done(); g.peers.Run(watchCtx) }()
	}

	errc := make(chan error, 4)
	go func() { errc <- g.admin.Serve(g.admLn) }()
	go func() { errc <- g.serve(g.pubLn, g.cfg.TLS, false) }()
	if g.redirLn != nil {
		go func() { errc <- g.serve(g.redirLn, nil, true) }()
	}
	if g.intLn != nil {
		go func() { errc <- g.serve(g.intLn, nil, false) }() // plain HTTP: its conns know it by ln
	}
	g.log.Info("gateway serving", zap.String("id", g.id), zap.String("public", g.PublicAddr()), zap.String("admin", g.AdminAddr()), zap.String("domain", g.cfg.Domain),
		zap.String("internal", g.InternalAddr()))
	if g.cfg.Register {
		var sent uint64
		idx := g.routesIdx.Load()
		if err := g.register(ctx, idx); err != nil {
			g.log.Error("cannot register in consul yet; retrying (scalers do not see this gateway meanwhile)", zap.Error(err))
		} else {
			sent = idx
			g.log.Info("registered in consul", zap.String("service", watch.GatewayService), zap.String("id", g.id))
		}
		pubCtx, stop := context.WithCancel(watchCtx)
		g.stopPub, g.pubDone = stop, make(chan struct{})
		go g.publish(pubCtx, sent, g.pubDone)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		runErr = fmt.Errorf("gateway: serve: %w", err)
	}
	g.drain()
	stopWatch()
	bg.Wait()
	return runErr
}

// drain stops accepting, waits for in-flight work up to DrainTimeout, then gives up on
// what is left, deregisters and closes the admin listener last (scalers keep seeing
// gauges meanwhile).
func (g *Gateway) drain() {
	start := g.clk.Now()
	g.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	g.pubLn.Close()
	if g.redirLn != nil {
		g.redirLn.Close()
	}
	if g.intLn != nil {
		g.intLn.Close()
	}
	connsDone := g.conns.drain(false)
	g.drainH2(ctx)
	go func() {
		defer close(done)
		select {
		case <-connsDone:
		case <-ctx.Done():
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		g.log.Warn("drain timeout: abandoning in-flight requests", zap.Duration("timeout", g.cfg.DrainTimeout))
		close(g.drainHard)
		g.conns.drain(true)
		g.h2.tr.CloseIdleConnections()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
	// Deregister only now: scalers keep reading this gateway's gauges (its in-flight
	// requests are real load) until it has drained.
	if g.cfg.Register {
		if g.stopPub != nil { // no re-registration may land after the deregistration
			g.stopPub()
			<-g.pubDone
		}
		g.deregister()
	}
	close(g.stopAdmin)
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer acancel()
	_ = g.admin.ShutdownWithContext(actx)
	g.closeListeners()
	g.log.Info("gateway drained", zap.Duration("took", g.clk.Now().Sub(start)))
}

// update applies Consul changes: it is the only writer of routing and revs.
func (g *Gateway) update(ctx context.Context) {
	var peers <-chan struct{}
	if g.peers != nil {
		peers = g.peers.Changed()
	}
	sweep := g.clk.NewTimer(upstream.MaxIdle)
	defer func() { sweep.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C():
			g.sweepIdle()
			sweep = g.clk.NewTimer(upstream.MaxIdle)
		case <-g.kv.Changed():
			g.applyKV()
		case <-g.eps.Changed():
			g.applyEndpoints()
		case <-peers:
			g.applyPeers()
		}
	}
}

func (g *Gateway) applyKV() {
	st := g.kv.Latest()
	eps := g.eps.Latest()
	// Publish the first table only once the endpoints are known too: a table without them
	// would hold every request and announce activations for revisions that are running.
	if st == nil || eps == nil {
		return
	}
	internalDomain := "" // no internal listener: no internal hosts to build
	if g.intLn != nil {
		internalDomain = g.cfg.InternalDomain
	}
	tbl := table.Build(st.Snapshot, g.cfg.Domain, internalDomain)
	now := g.clk.Now()
	next := &routing{tbl: tbl, revs: make([]*revision, len(tbl.Revisions()))}
	keep := make(map[string]*revision, len(tbl.Revisions()))
	for i, tr := range tbl.Revisions() {
		r := g.revs[tr.Key]
		if r == nil {
			r = g.newRevision(tr.Config)
			r.setShare(g.shareN, g.shareK)
			r.applyEndpoints(eps.Services[tr.Config.Revision], eps.Index)
		}
		r.setConfig(tr.Config)
		if f, ok := st.Snapshot.Failures[tr.Key]; ok {
			r.setFailure(&f, now)
		} else {
			r.setFailure(nil, now)
		}
		next.revs[i] = r
		keep[tr.Key] = r
	}
	var gone []*revision
	for k, r := range g.revs {
		if _, ok := keep[k]; !ok {
			gone = append(gone, r)
		}
	}
	g.revs = keep
	g.routing.Store(next)
	g.routesIdx.Store(st.Index)
	select {
	case g.routesKick <- struct{}{}:
	default:
	}
	for _, r := range gone {
		r.retire() // after the swap: no new request can reach it
	}
	g.metrics.tableUpdates.Inc()
	for _, p := range tbl.Problems() {
		g.log.Warn("route table", zap.String("problem", p))
	}
	g.log.Info("route table updated", zap.Uint64("kv_index", st.Index), zap.Int("hosts", tbl.Len()), zap.Int("revisions", len(next.revs)))
	if ce := g.log.Check(zap.DebugLevel, "route table"); ce != nil {
		ce.Write(zap.String("table", tbl.String()))
	}
}

func (g *Gateway) applyEndpoints() {
	eps := g.eps.Latest()
	if eps == nil {
		return
	}
	if g.routing.Load() == nil {
		g.applyKV() // the first table was waiting for the endpoints
		return
	}
	for _, r := range g.revs {
		r.applyEndpoints(eps.Services[r.name], eps.Index)
	}
}

// applyPeers recomputes this gateway's share of every per-instance limit: n is the number
// of passing gateways (this one included even before its check passes), k its position
// among them.
func (g *Gateway) applyPeers() {
	ids := g.peers.Latest()
	n, k := len(ids), -1
	for i, id := range ids {
		if id == g.id {
			k = i
		}
	}
	if k < 0 {
		k = 0
		for k < len(ids) && ids[k] < g.id {
			k++
		}
		n++
	}
	if n == g.shareN && k == g.shareK {
		return
	}
	g.shareN, g.shareK = n, k
	g.log.Info("gateway peers changed; per-instance limits re-shared", zap.Int("gateways", n), zap.Int("index", k))
	for _, r := range g.revs {
		r.setShare(n, k)
	}
}

// activation bumps the activation sequence: long polls on /activations answer at once.
func (g *Gateway) activation() {
	g.actMu.Lock()
	g.actSeq++
	close(g.actCh)
	g.actCh = make(chan struct{})
	g.actMu.Unlock()
}

// activationState returns the sequence and a channel closed when it next moves.
func (g *Gateway) activationState() (uint64, <-chan struct{}) {
	g.actMu.Lock()
	defer g.actMu.Unlock()
	return g.actSeq, g.actCh
}

// sweepIdle closes stale upstream connections of every routed revision.
func (g *Gateway) sweepIdle() {
	rt := g.routing.Load()
	if rt == nil {
		return
	}
	now := g.clk.Now()
	for _, r := range rt.revs {
		r.mu.Lock()
		for _, in := range r.backends {
			in.Backend.pool.CloseStale(now)
		}
		r.mu.Unlock()
	}
}
