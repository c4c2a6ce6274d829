// Package guard is rouse's in-group concurrency limiter, `rouse guard`: a task beside the
// app in the Nomad group of every revision with a hard `concurrency` limit. The
// instance's Consul service points at the guard, so every gateway reaches the app through
// it, and it lets at most Limit connections reach the app at once; the others wait their
// turn in arrival order. Gateways send one request per connection to such revisions, so
// connections are requests.
//
// It is a byte relay, not an HTTP proxy: it never parses or rewrites what passes, so it
// adds no reading of HTTP that could disagree with the gateway's or the app's. What makes
// the limit exact is when a slot is freed: only once the app has closed its side of the
// connection (or the revision's timeout has passed since admission). A gateway that dies
// mid-request closes its end; the guard then only half-closes the app's, keeps reading the
// app's answer into nowhere, and frees the slot when the app is done — the request runs to
// its end on the app, and no other request joins it there. docs/architecture.md,
// "Concurrency across gateways", has the reasoning.
package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
)

// Config is a guard's; zero values take the defaults on each field.
type Config struct {
	// Listen is where gateways connect (required; ":0" picks a free port).
	Listen string
	// Upstream is the app's address (required).
	Upstream string
	// Limit is the revision's concurrency: connections the app has at most (required, ≥ 1).
	Limit int
	// Timeout is the revision's request timeout (required). An admitted connection is cut
	// that long after admission and its slot freed, whatever the app is doing, as
	// Knative's queue-proxy does at the same timeout; a connection still waiting after
	// that long is refused (its gateway has answered 504 by then).
	Timeout time.Duration
	// MaxQueued bounds the connections waiting for a slot (default 1000); more are
	// refused. Gateways each keep their own share of the slots, so what waits here is at
	// most about one connection per gateway beyond the limit.
	MaxQueued int
	// DialTimeout bounds connecting to the app (default 5 s).
	DialTimeout time.Duration
	// Logger gets the guard's logs (default: none).
	Logger *zap.Logger
	// Clock is the time source (default: the wall clock).
	Clock clock.Clock
}

const (
	defaultMaxQueued   = 1000
	defaultDialTimeout = 5 * time.Second
)

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Listen == "":
		return c, errors.New("guard: a listen address is required")
	case c.Upstream == "":
		return c, errors.New("guard: the app's (upstream) address is required")
	case c.Limit < 1:
		return c, fmt.Errorf("guard: concurrency %d: at least 1", c.Limit)
	case c.Timeout <= 0:
		return c, fmt.Errorf("guard: timeout %s: more than 0", c.Timeout)
	}
	if c.MaxQueued <= 0 {
		c.MaxQueued = defaultMaxQueued
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = defaultDialTimeout
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return c, nil
}

// Guard is one running limiter. New binds its listener; Run serves until its context ends.
type Guard struct {
	cfg   Config
	log   *zap.Logger
	clk   clock.Clock
	ln    net.Listener
	slots chan struct{} // one token per connection admitted to the app
	wg    sync.WaitGroup

	queued, admitted atomic.Int64
	maxAdmitted      atomic.Int64
	refused          atomic.Int64
}

// New validates cfg and binds the listener.
func New(cfg Config) (*Guard, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("guard: listen: %w", err)
	}
	return &Guard{cfg: cfg, log: cfg.Logger, clk: cfg.Clock, ln: ln, slots: make(chan struct{}, cfg.Limit)}, nil
}

// Addr is the listener's address.
func (g *Guard) Addr() net.Addr { return g.ln.Addr() }

// Stats are the guard's counters.
type Stats struct {
	Admitted    int64 // connections to the app now
	Queued      int64 // connections waiting for a slot
	MaxAdmitted int64 // the most admitted at once so far
	Refused     int64 // connections refused: queue full, waited too long, app unreachable
}

// Stats reads the counters.
func (g *Guard) Stats() Stats {
	return Stats{Admitted: g.admitted.Load(), Queued: g.queued.Load(), MaxAdmitted: g.maxAdmitted.Load(), Refused: g.refused.Load()}
}

// Run serves until ctx ends, then stops accepting and waits for every connection it took
// — admitted or waiting — to end (each is bounded by Timeout), so that a request admitted
// before the instance was told to stop still completes.
func (g *Guard) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { g.ln.Close() })
	defer stop()
	g.log.Info("guarding", zap.String("listen", g.ln.Addr().String()), zap.String("upstream", g.cfg.Upstream),
		zap.Int("concurrency", g.cfg.Limit), zap.Duration("timeout", g.cfg.Timeout))
	var err error
	for {
		var c net.Conn
		c, err = g.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			break
		}
		g.wg.Add(1)
		go g.serve(c.(*net.TCPConn))
	}
	if ctx.Err() == nil {
		return fmt.Errorf("guard: accept: %w", err)
	}
	g.log.Info("draining", zap.Int64("admitted", g.admitted.Load()), zap.Int64("queued", g.queued.Load()))
	g.wg.Wait()
	return nil
}

// serve takes one gateway connection through the queue to the app.
func (g *Guard) serve(c *net.TCPConn) {
	defer g.wg.Done()
	if g.queued.Add(1) > int64(g.cfg.MaxQueued) {
		g.queued.Add(-1)
		g.refuse(c, "the queue is full")
		return
	}
	// The wait is bounded by the timeout: the gateway has answered 504 by then.
	t := g.clk.NewTimer(g.cfg.Timeout)
	select {
	case g.slots <- struct{}{}:
		t.Stop()
		g.queued.Add(-1)
	case <-t.C():
		g.queued.Add(-1)
		g.refuse(c, "it waited the whole timeout for a slot")
		return
	}
	defer func() { <-g.slots }()
	// A gateway that gave up while this waited has closed its end: its request (maybe
	// in the socket's buffer already) must not reach the app.
	if peerClosed(c) {
		c.Close()
		return
	}
	up, err := net.DialTimeout("tcp", g.cfg.Upstream, g.cfg.DialTimeout)
	if err != nil {
		g.refuse(c, "the app does not accept connections: "+err.Error())
		return
	}
	n := g.admitted.Add(1)
	for m := g.maxAdmitted.Load(); n > m && !g.maxAdmitted.CompareAndSwap(m, n); m = g.maxAdmitted.Load() {
	}
	defer g.admitted.Add(-1)
	g.relay(c, up.(*net.TCPConn))
}

// refuse resets c without an answer: a gateway retries an idempotent request it got no
// byte of an answer for on another instance.
func (g *Guard) refuse(c *net.TCPConn, why string) {
	g.refused.Add(1)
	g.log.Warn("refusing a connection: "+why, zap.String("from", c.RemoteAddr().String()))
	_ = c.SetLinger(0)
	c.Close()
}

// relay copies both ways until the app has closed its side (or the timeout passed), and
// only then returns, which frees the slot.
func (g *Guard) relay(down, up *net.TCPConn) {
	deadline := g.clk.Now().Add(g.cfg.Timeout)
	_ = down.SetDeadline(deadline)
	_ = up.SetDeadline(deadline)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_, _ = io.Copy(up, down) // kernel splice on Linux
		// The gateway is done sending (or gone): the app reads the end of its input and
		// finishes what it is doing; its answer is still read below.
		_ = up.CloseWrite()
	}()
	if _, err := io.Copy(down, up); err != nil && !errors.Is(err, io.EOF) {
		// The gateway went away (or the deadline passed): keep reading the app until it
		// closes, so the slot stays taken while the request still runs there.
		_, _ = io.Copy(io.Discard, up)
	}
	up.Close()
	down.Close() // ends the copy towards the app, if the gateway is still sending
	<-sent
}
