// Package guard is rouse's in-group concurrency limiter, `rouse guard`: a task beside the
// app in the Nomad group of every revision with a hard `concurrency` limit. The
// instance's Consul service points at the guard, so every gateway reaches the app through
// it, and it lets at most Limit requests reach the app at once; the others wait their
// turn in arrival order.
//
// It speaks HTTP with Go's net/http on both sides, kept-alive (HTTP/1.1, and h2c with
// prior knowledge for an h2c app): net/http is the reference the gateway's own HTTP is
// judged against, and the app gets each request as net/http writes it. What makes the
// limit exact is when a slot is freed: only once the app's answer has ended (or the
// revision's timeout has passed since admission). A gateway that dies mid-request goes
// away with its connection; the guard's request to the app does not depend on it, runs
// on, and its answer is read into nowhere to its end — the request runs to its end on the
// app, and no other request joins it there. docs/architecture.md, "Concurrency across
// gateways", has the reasoning.
package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/internal/clock"
)

// Config is a guard's; zero values take the defaults on each field.
type Config struct {
	// Listen is where gateways connect (required; ":0" picks a free port).
	Listen string
	// Upstream is the app's address (required).
	Upstream string
	// H2C: the app speaks HTTP/2 with prior knowledge (protocol = "h2c"), not HTTP/1.1.
	H2C bool
	// Limit is the revision's concurrency: requests the app has at most (required, ≥ 1).
	Limit int
	// Timeout is the revision's request timeout (required). An admitted request is cut
	// that long after admission and its slot freed, whatever the app is doing, as
	// Knative's queue-proxy does at the same timeout; a request still waiting after that
	// long gets 504 (its gateway has answered 504 by then).
	Timeout time.Duration
	// MaxQueued bounds the requests waiting for a slot (default 1000); more get 503.
	// Gateways each keep their own share of the slots, so what waits here is at most
	// about one request per gateway beyond the limit.
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
	maxHeaderBytes     = 1 << 20
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
	srv   *http.Server
	tr    *http.Transport
	slots chan struct{} // one token per request admitted to the app
	bufs  sync.Pool     // of *[]byte, for copying answers

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
	g := &Guard{cfg: cfg, log: cfg.Logger, clk: cfg.Clock, ln: ln, slots: make(chan struct{}, cfg.Limit)}
	var in, out http.Protocols
	in.SetHTTP1(true)
	in.SetUnencryptedHTTP2(true) // gateways speak h2c to an h2c revision
	if cfg.H2C {
		out.SetUnencryptedHTTP2(true)
	} else {
		out.SetHTTP1(true)
	}
	g.srv = &http.Server{
		Handler: g, Protocols: &in, MaxHeaderBytes: maxHeaderBytes,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second,
		ErrorLog: zap.NewStdLog(cfg.Logger.Named("http")),
	}
	g.tr = &http.Transport{
		Protocols:   &out,
		DialContext: (&net.Dialer{Timeout: cfg.DialTimeout}).DialContext,
		// Bodies pass as they are; every slot may keep its connection.
		DisableCompression: true, MaxIdleConnsPerHost: cfg.Limit, IdleConnTimeout: 90 * time.Second,
		MaxResponseHeaderBytes: maxHeaderBytes,
	}
	return g, nil
}

// Addr is the listener's address.
func (g *Guard) Addr() net.Addr { return g.ln.Addr() }

// Stats are the guard's counters.
type Stats struct {
	Admitted    int64 // requests at the app now
	Queued      int64 // requests waiting for a slot
	MaxAdmitted int64 // the most admitted at once so far
	Refused     int64 // requests refused: queue full, waited too long, app unreachable
}

// Stats reads the counters.
func (g *Guard) Stats() Stats {
	return Stats{Admitted: g.admitted.Load(), Queued: g.queued.Load(), MaxAdmitted: g.maxAdmitted.Load(), Refused: g.refused.Load()}
}

// Run serves until ctx ends, then stops accepting and waits for every request it took —
// admitted or waiting — to end (each is bounded by Timeout), so that a request admitted
// before the instance was told to stop still completes.
func (g *Guard) Run(ctx context.Context) error {
	g.log.Info("guarding", zap.String("listen", g.ln.Addr().String()), zap.String("upstream", g.cfg.Upstream),
		zap.Bool("h2c", g.cfg.H2C), zap.Int("concurrency", g.cfg.Limit), zap.Duration("timeout", g.cfg.Timeout))
	errc := make(chan error, 1)
	go func() { errc <- g.srv.Serve(g.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("guard: serve: %w", err)
	case <-ctx.Done():
	}
	g.log.Info("draining", zap.Int64("admitted", g.admitted.Load()), zap.Int64("queued", g.queued.Load()))
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeout+time.Second)
	defer cancel()
	err := g.srv.Shutdown(sctx)
	g.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("guard: drain: %w", err)
	}
	return nil
}

// ServeHTTP takes one request through the queue to the app.
func (g *Guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.queued.Add(1) > int64(g.cfg.MaxQueued) {
		g.queued.Add(-1)
		g.refuse(w, http.StatusServiceUnavailable, "queue_full", "its queue is full")
		return
	}
	if !g.acquire(w, r) {
		return
	}
	defer func() { <-g.slots }()
	if r.Context().Err() != nil {
		return // gone just as its turn came
	}
	n := g.admitted.Add(1)
	for m := g.maxAdmitted.Load(); n > m && !g.maxAdmitted.CompareAndSwap(m, n); m = g.maxAdmitted.Load() {
	}
	defer g.admitted.Add(-1)
	g.forward(w, r)
}

// acquire takes a slot for r, waiting its turn if none is free, and reports whether it
// got one (if not, r is answered or its gateway is gone). A free slot costs no timer.
func (g *Guard) acquire(w http.ResponseWriter, r *http.Request) bool {
	defer g.queued.Add(-1)
	select {
	case g.slots <- struct{}{}:
		return true
	default:
	}
	// The wait is bounded by the timeout: the gateway has answered 504 by then.
	t := g.clk.NewTimer(g.cfg.Timeout)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return true
	case <-t.C():
		g.refuse(w, http.StatusGatewayTimeout, "timeout", "no slot within the timeout")
		return false
	case <-r.Context().Done():
		// The gateway gave up (or died) while this waited: its request never reaches
		// the app.
		return false
	}
}

// refuse answers a request the guard does not pass on.
func (g *Guard) refuse(w http.ResponseWriter, code int, reason, why string) {
	g.refused.Add(1)
	g.log.Warn("refusing a request: "+why, zap.String("reason", reason))
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, "rouse guard: "+why+"\n")
}

// forward sends r to the app and its answer back, and returns only once the app's answer
// has ended (or the timeout passed), which frees the slot. The request to the app does
// not hang on the gateway's connection: a gateway that goes away leaves it running, and
// its answer is read to the end into nowhere.
func (g *Guard) forward(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithDeadline(context.WithoutCancel(r.Context()), g.clk.Now().Add(g.cfg.Timeout))
	defer cancel()
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = "http", g.cfg.Upstream
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil // nothing to send: no chunked empty body either
	}
	upgrade := upgradeType(r.Header)
	dropHopByHop(out.Header)
	if upgrade != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", upgrade)
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // net/http would add its own
	}
	resp, err := g.tr.RoundTrip(out)
	if err != nil {
		if ctx.Err() != nil {
			g.refuse(w, http.StatusGatewayTimeout, "timeout", "the app did not answer within the timeout")
			return
		}
		// Nothing of an answer: end the exchange without one, so that a gateway sends
		// an idempotent request to another instance, as for an app that refused it.
		g.refused.Add(1)
		g.log.Warn("the app failed the request", zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		g.tunnel(w, resp)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	dropHopByHop(h)
	// What the app did not say, net/http must not add.
	for _, k := range []string{"Content-Type", "Date"} {
		if _, ok := h[k]; !ok {
			h[k] = nil
		}
	}
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	// An answer of unknown length may be a stream (server-sent events, gRPC): each piece
	// goes on as it comes. One of known length goes as net/http buffers it.
	if err := g.copyAnswer(w, resp.Body, resp.ContentLength < 0 || resp.ProtoMajor == 2); err != nil && !errors.Is(err, errUpstream) {
		// The gateway went away: the request still runs on the app; wait for its end.
		_, _ = io.Copy(io.Discard, resp.Body)
		return
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
}

// errUpstream marks a failure reading the app's answer, not writing it on.
var errUpstream = errors.New("reading the app's answer")

// copyAnswer copies the app's answer to w, flushing each piece when flush is set.
func (g *Guard) copyAnswer(w http.ResponseWriter, body io.Reader, flush bool) error {
	rc := http.NewResponseController(w)
	bp, _ := g.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 32<<10)
		bp = &b
	}
	defer g.bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if flush {
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("%w: %w", errUpstream, rerr)
		}
	}
}

// tunnel relays an upgraded connection (WebSocket) both ways; the slot is held until
// both directions have ended.
func (g *Guard) tunnel(w http.ResponseWriter, resp *http.Response) {
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	defer up.Close()
	down, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer down.Close()
	_ = down.SetDeadline(time.Time{})
	// The 101 head, with the app's fields.
	fmt.Fprintf(brw, "HTTP/1.1 101 %s\r\n", http.StatusText(http.StatusSwitchingProtocols))
	_ = resp.Header.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, brw) // what the client sent, buffered or not
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	_, _ = io.Copy(down, up)
	down.Close()
	<-done
}

// dropHopByHop removes the fields of one connection (http1.HopByHop, the gateway's own
// list), Transfer-Encoding (net/http frames each hop itself) and the fields Connection
// names. TE: trailers stays: gRPC asks for trailers end to end.
func dropHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for k := range h {
		if k == "Te" && strings.EqualFold(strings.TrimSpace(h.Get("Te")), "trailers") {
			continue
		}
		if http1.HopByHop(k) || k == "Transfer-Encoding" {
			delete(h, k)
		}
	}
}

// upgradeType is the protocol an upgrade request asks for ("" for none).
func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}
