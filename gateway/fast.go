package gateway

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/rouse-run/rouse/gateway/balance"
)

// The fast path serves the common request — HTTP/1.1, routed, a body of known small
// length or none, an instance free at once — by forwarding bytes: it parses only what
// routing, framing and the hop-by-hop rules need, copies the rest of the head as it came,
// and relays the response the same way. fasthttp's two full parses and re-serialisations
// were most of the gateway's CPU per request. Anything else (chunked or large uploads,
// Upgrade, Expect, HTTP/1.0, odd or oversized heads, a revision to wake or a full one,
// a refused connection) is handed with the bytes read so far to the fasthttp server,
// which owns the connection from then on; so the general path stays the one all the
// limits, holds and retries were built and tested on.

// Connection states, for drain: only an idle connection (waiting for a request) is
// woken and closed; an active one closes after its response.
const (
	connIdle int32 = iota
	connActive
	connClosing
)

// deadlineSlack: idle and write deadlines are pushed only when they have moved this much,
// so a keep-alive connection does not rearm a timer per request.
const deadlineSlack = time.Second

type fastConn struct {
	g      *Gateway
	c      net.Conn
	buf    []byte // read buffer; buf[r:w] is unread
	r, w   int
	out    []byte // the head (and body) being written
	state  atomic.Int32
	readDL time.Time
	wrDL   time.Time
	ip     []byte // the client address as X-Forwarded-For gets it
	remote *connAddr
	pinned *revision
	req    rawRequest
	// idleAt is when the last response ended: the next idle deadline is counted from it
	// rather than from another clock read.
	idleAt time.Time
}

// rawRequest is what the fast path knows of a request; byte slices point into buf.
type rawRequest struct {
	method, uri, host []byte
	headLen           int   // request line + headers + blank line
	cl                int64 // Content-Length, 0 without one
	close             bool  // the client asked to close after this response
	keep              [][2]int
	xff, xfp, xfh     []byte
}

// fastConns tracks the fast path's connections for drain and the connection limit.
type fastConns struct {
	mu    sync.Mutex
	conns map[*fastConn]struct{}
	n     atomic.Int64
	done  chan struct{} // closed when the last connection left after drain began
}

// serveFast is the public listener's accept loop.
func (g *Gateway) serveFast(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if g.draining.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		if g.fast.n.Load() >= int64(g.cfg.MaxConns) {
			_, _ = c.Write(closingResponse(503, "rouse: too many open connections\n"))
			c.Close()
			continue
		}
		fc := &fastConn{g: g, c: c}
		if !g.fast.add(fc) {
			c.Close()
			continue
		}
		go fc.serve()
	}
}

func (f *fastConns) add(fc *fastConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false // draining
	}
	f.conns[fc] = struct{}{}
	f.n.Add(1)
	return true
}

func (f *fastConns) remove(fc *fastConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(fc.g.fast.conns, fc)
	if f.n.Add(-1) == 0 && f.done != nil {
		close(f.done)
		f.done = nil
	}
}

// drain wakes idle connections so they close and returns a channel closed when the last
// fast-path connection is gone. hard closes every connection.
func (f *fastConns) drain(hard bool) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	done := make(chan struct{})
	if f.done == nil {
		f.done = done
	} else {
		done = f.done
	}
	for fc := range f.conns {
		if hard || fc.state.CompareAndSwap(connIdle, connClosing) {
			_ = fc.c.SetReadDeadline(time.Unix(1, 0))
		}
		if hard {
			fc.c.Close()
		}
	}
	if f.n.Load() == 0 {
		close(f.done)
		f.done = nil
	}
	return done
}

func (fc *fastConn) serve() {
	g := fc.g
	handed := false
	defer func() {
		g.fast.remove(fc)
		if !handed {
			fc.c.Close()
		}
		g.putBuffers(fc)
	}()
	g.getBuffers(fc)
	if ta, ok := fc.c.RemoteAddr().(*net.TCPAddr); ok {
		fc.ip = ta.AddrPort().Addr().Unmap().AppendTo(nil)
	}
	fc.remote = &connAddr{Addr: fc.c.RemoteAddr(), s: fc.c.RemoteAddr().String()}
	for {
		if !fc.readHead() {
			return
		}
		if !fc.state.CompareAndSwap(connIdle, connActive) {
			return // drain began while it waited
		}
		switch fc.handle() {
		case fastDone:
		case fastClose:
			return
		case fastHandOff:
			handed = true
			fc.handOff()
			return
		}
		if g.draining.Load() || !fc.state.CompareAndSwap(connActive, connIdle) {
			return
		}
	}
}

// readHead reads until buf[r:] holds a whole request head, or there is a reason to hand
// off (the head does not fit: fasthttp answers 431). False: close the connection.
func (fc *fastConn) readHead() bool {
	g := fc.g
	if fc.r == fc.w {
		fc.r, fc.w = 0, 0
	}
	var first time.Time
	for {
		if i := bytes.Index(fc.buf[fc.r:fc.w], crlfcrlf); i >= 0 {
			fc.idleAt = time.Time{} // a pipelined request: the connection was not idle
			fc.req.headLen = i + 4
			if fc.req.headLen > g.cfg.MaxHeaderBytes {
				fc.req.headLen = -1 // fasthttp answers 431
			}
			return true
		}
		if fc.w-fc.r >= g.cfg.MaxHeaderBytes {
			fc.req.headLen = -1 // not a head we take: fasthttp answers it
			return true
		}
		if fc.w == len(fc.buf) { // make room at the front
			fc.w = copy(fc.buf, fc.buf[fc.r:fc.w])
			fc.r = 0
		}
		now := fc.idleAt
		if now.IsZero() || fc.w > fc.r {
			now = g.clk.Now()
		}
		fc.idleAt = time.Time{}
		if fc.w > fc.r {
			// Part of a head arrived: the rest must come within ReadTimeout (slowloris).
			if first.IsZero() {
				first = now
				fc.setReadDeadline(now.Add(g.cfg.ReadTimeout), true)
			}
		} else if dl := now.Add(g.cfg.IdleTimeout); fc.readDL.Before(dl) {
			fc.setReadDeadline(dl, false)
		}
		n, err := fc.c.Read(fc.buf[fc.w:])
		fc.w += n
		if err != nil {
			if n > 0 {
				continue
			}
			var ne net.Error
			if fc.w > fc.r && errors.As(err, &ne) && ne.Timeout() && !g.draining.Load() {
				fc.timedOut()
			}
			return false
		}
	}
}

func (fc *fastConn) setReadDeadline(t time.Time, exact bool) {
	if !exact {
		t = t.Add(deadlineSlack) // pushed late, never early
	}
	fc.readDL = t
	_ = fc.c.SetReadDeadline(t)
}

type fastResult int

const (
	fastDone fastResult = iota
	fastClose
	fastHandOff
)

var crlfcrlf = []byte("\r\n\r\n")

// handle serves the request at buf[r:] if it is one for the fast path.
func (fc *fastConn) handle() fastResult {
	g := fc.g
	if fc.req.headLen < 0 || !fc.parse() {
		return fastHandOff
	}
	req := &fc.req
	if req.cl > 0 {
		if ok, res := fc.readBody(); !ok {
			return res
		}
	}
	rt := g.routing.Load()
	if rt == nil {
		return fastHandOff
	}
	route := rt.tbl.Lookup(req.host)
	if route == nil {
		return fastHandOff
	}
	tgt := route.Pick(rand.Uint32())
	if tgt == nil {
		return fastHandOff
	}
	rev := rt.revs[tgt.Index]
	if g.cfg.MaxBodyBytes > 0 && req.cl > g.cfg.MaxBodyBytes {
		return fastHandOff
	}
	in := rev.pool.TryAcquire()
	if in == nil {
		// Hold, queue or overflow: the general path decides, for the revision drawn here
		// (drawing again there would favour the revision with room and skew the split).
		fc.pinned = rev
		return fastHandOff
	}
	start := g.clk.Now()
	res := fc.forward(rev, in, start)
	return res
}

// readBody makes sure the request's whole (small) body is in buf after its head. When it
// cannot (it would not fit, or did not come within ReadTimeout) the result says what to do.
func (fc *fastConn) readBody() (bool, fastResult) {
	g := fc.g
	need := fc.r + fc.req.headLen + int(fc.req.cl)
	if need > len(fc.buf) {
		if fc.req.headLen+int(fc.req.cl) > len(fc.buf) {
			return false, fastHandOff
		}
		fc.w = copy(fc.buf, fc.buf[fc.r:fc.w])
		fc.r = 0
		need = fc.req.headLen + int(fc.req.cl)
	}
	if fc.w >= need {
		return true, fastDone
	}
	fc.setReadDeadline(g.clk.Now().Add(g.cfg.ReadTimeout), true)
	for fc.w < need {
		n, err := fc.c.Read(fc.buf[fc.w:])
		fc.w += n
		if err != nil && fc.w < need {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !g.draining.Load() {
				fc.timedOut()
			}
			return false, fastClose
		}
	}
	return true, fastDone
}

// timedOut answers a request that did not arrive within ReadTimeout (slowloris).
func (fc *fastConn) timedOut() {
	fc.g.metrics.rejected.WithLabelValues("read_timeout").Inc()
	fc.pushWriteDeadline()
	_, _ = fc.c.Write(closingResponse(408, msgReadTimeout))
}

// msgReadTimeout is the 408's body on both paths.
const msgReadTimeout = "rouse: request not received in time\n"

// closingResponse is a plain-text answer after which the connection closes.
func closingResponse(status int, msg string) []byte {
	out := append([]byte("HTTP/1.1 "), strconv.Itoa(status)...)
	out = append(append(out, ' '), fasthttp.StatusMessage(status)...)
	out = append(out, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(msg)), 10)
	return append(append(out, "\r\nConnection: close\r\n\r\n"...), msg...)
}

// forward sends the request to in and relays the answer. It owns in's slot.
func (fc *fastConn) forward(rev *revision, in *balance.Instance[*backend], start time.Time) fastResult {
	g, req := fc.g, &fc.req
	deadline := start.Add(rev.timeout())
	out := fc.out[:0]
	out = append(out, req.method...)
	out = append(out, ' ')
	out = append(out, req.uri...)
	out = append(out, " HTTP/1.1\r\n"...)
	for _, s := range req.keep {
		out = append(append(out, fc.buf[s[0]:s[1]]...), '\r', '\n')
	}
	out = append(out, "X-Forwarded-For: "...)
	if len(req.xff) > 0 {
		out = append(append(out, req.xff...), ", "...)
	}
	out = append(append(out, fc.ip...), '\r', '\n')
	out = append(out, "X-Forwarded-Proto: "...)
	switch {
	case g.cfg.TrustForwarded && len(req.xfp) > 0:
		out = append(out, req.xfp...)
	default:
		out = append(out, "http"...)
	}
	out = append(out, "\r\nX-Forwarded-Host: "...)
	if g.cfg.TrustForwarded && len(req.xfh) > 0 {
		out = append(out, req.xfh...)
	} else {
		out = append(out, req.host...)
	}
	out = append(out, "\r\n\r\n"...)
	bodyStart := fc.r + req.headLen
	out = append(out, fc.buf[bodyStart:bodyStart+int(req.cl)]...)
	fc.out = out

	b := in.Backend
	var uc *upConn
	var err error
	for attempt := 0; ; attempt++ {
		reused := false
		uc, reused, err = b.raw.get(g, b.addr, start, deadline)
		if err != nil {
			// Nothing was sent: the general path tries another instance or holds.
			rev.pool.Release(in)
			if isDialError(err) {
				rev.markDown(in)
			}
			return fastHandOff
		}
		uc.setDeadline(deadline, rev.timeout())
		err = uc.roundTrip(out, req.method)
		if err == nil {
			break
		}
		uc.c.Close()
		if reused && attempt < 3 && uc.got == 0 && idempotent(req.method) {
			continue // a keep-alive connection the instance had closed
		}
		rev.pool.Release(in)
		status, reason, msg := 502, "upstream_error", "rouse: revision "+rev.name+" instance failed: "+err.Error()+"\n"
		if isTimeout(err) {
			status, reason, msg = 504, "timeout", "rouse: revision "+rev.name+" did not answer within its timeout of "+rev.timeout().String()+"\n"
		}
		fc.consume()
		return fc.own(rev, start, status, reason, msg)
	}

	// The response head, rewritten: hop-by-hop headers go.
	status, n, werr, reuse := fc.relay(uc, req.method)
	end := g.clk.Now()
	if reuse {
		b.raw.put(uc, end)
	} else {
		uc.c.Close()
	}
	rev.pool.Release(in)
	fc.consume()
	g.metrics.fastPath.Inc()
	fc.idleAt = end
	d := end.Sub(start)
	rev.count(status, d)
	g.logAccessRaw(req.host, req.method, req.uri, fc.remote, rev, in, status, n, d, 0, werr)
	if werr != nil || req.close {
		return fastClose
	}
	return fastDone
}

// consume drops the served request from the read buffer.
func (fc *fastConn) consume() {
	fc.r += fc.req.headLen + int(fc.req.cl)
}

// own answers with a plain-text error of the gateway's own.
func (fc *fastConn) own(rev *revision, start time.Time, status int, reason, msg string) fastResult {
	g := fc.g
	out := append(fc.out[:0], "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	out = append(out, fasthttp.StatusMessage(status)...)
	out = append(out, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(msg)), 10)
	if fc.req.close {
		out = append(out, "\r\nConnection: close"...)
	}
	out = append(out, "\r\n\r\n"...)
	out = append(out, msg...)
	fc.out = out
	fc.pushWriteDeadline()
	_, werr := fc.c.Write(out)
	g.metrics.rejected.WithLabelValues(reason).Inc()
	d := g.clk.Now().Sub(start)
	rev.count(status, d)
	g.logAccessRaw(fc.req.host, fc.req.method, fc.req.uri, fc.remote, rev, nil, status, int64(len(msg)), d, 0, werr)
	if werr != nil || fc.req.close {
		return fastClose
	}
	return fastDone
}

func (fc *fastConn) pushWriteDeadline() {
	wt := fc.g.cfg.WriteTimeout
	if wt <= 0 {
		return
	}
	now := fc.g.clk.Now()
	if dl := now.Add(wt); fc.wrDL.Before(dl) {
		fc.wrDL = dl.Add(deadlineSlack)
		_ = fc.c.SetWriteDeadline(fc.wrDL)
	}
}

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// handOff gives the connection, with what was read of it, to the fasthttp server.
func (fc *fastConn) handOff() {
	pending := append([]byte(nil), fc.buf[fc.r:fc.w]...)
	fc.g.metrics.handoffs.Inc()
	fc.g.handoff.push(&prefixConn{Conn: fc.c, pending: pending, pinned: fc.pinned})
}

// connAddr is a connection's remote address with its text made once, so the access log
// does not format it again for every request of a kept-alive connection.
type connAddr struct {
	net.Addr
	s string
}

func (a *connAddr) String() string { return a.s }

// prefixConn replays bytes already read from a connection before reading it further.
type prefixConn struct {
	net.Conn
	pending []byte
	pinned  *revision // the revision the fast path drew for the first request, if any
}

// takePinned returns, once, the revision drawn for the first request handed over.
func takePinned(c net.Conn) *revision {
	if pc, ok := c.(*prefixConn); ok && pc.pinned != nil {
		r := pc.pinned
		pc.pinned = nil
		return r
	}
	return nil
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return p.Conn.Close()
}

// handoffListener is the fasthttp server's listener: it yields the connections the fast
// path hands over, so fasthttp counts, serves and drains them as its own.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoffListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

func (g *Gateway) getBuffers(fc *fastConn) {
	if b, ok := g.fastBufs.Get().(*fastBufs); ok {
		fc.buf, fc.out, fc.req.keep = b.buf, b.out, b.keep
		return
	}
	fc.buf = make([]byte, g.cfg.MaxHeaderBytes+prefetchBytes)
	fc.out = make([]byte, 0, 4096)
}

func (g *Gateway) putBuffers(fc *fastConn) {
	if fc.buf == nil {
		return
	}
	g.fastBufs.Put(&fastBufs{buf: fc.buf, out: fc.out[:0], keep: fc.req.keep[:0]})
	fc.buf, fc.out = nil, nil
}

type fastBufs struct {
	buf, out []byte
	keep     [][2]int
}
