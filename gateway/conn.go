package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rouse-run/rouse/gateway/http1"
)

// The public listener's HTTP/1.1 server. One goroutine per client connection reads a
// request head into the connection's buffer, parses it by the rules of package http1,
// routes it, takes a slot on an instance (holding or queueing when there is none free),
// forwards the head it rebuilt and the body as it arrives, and relays the response. The
// request head is parsed once and its offsets stay valid until the response is written.

// Connection states, for drain: only an idle connection (waiting for a request) is
// woken and closed; an active one closes after its response.
const (
	connIdle int32 = iota
	connActive
	connClosing
	connHTTP2 // served by the HTTP/2 server: drain sends it GOAWAY
)

// deadlineSlack: idle and write deadlines are pushed only when they have moved this much,
// so a keep-alive connection does not rearm a timer per request.
const deadlineSlack = time.Second

// prefetchBytes: a body of at most this many bytes (Content-Length) is read whole before
// a slot is taken, so a slow client holds no instance while it sends it, and a request
// that fails on a reused connection can be sent again. Longer bodies stream.
const prefetchBytes = 8 << 10

var crlfcrlf = []byte("\r\n\r\n")

type conn struct {
	g      *Gateway
	c      net.Conn
	buf    []byte // read buffer; buf[r:w] is unread; the current request starts at r
	r, w   int
	out    []byte       // what is being written: a head, with a small body
	framer http1.Framer // the response body's framing (and, for HTTP/1.0, its data unchunked)
	state  atomic.Int32
	readDL time.Time
	wrDL   time.Time
	ip     []byte // the client address as X-Forwarded-For gets it
	remote *connAddr
	proto  string // X-Forwarded-Proto
	// redirect: a connection of the redirect listener, whose every request gets a 308 to
	// https.
	redirect bool
	// internal: a connection of the internal listener, which serves internal services
	// and the internal domain (route.go).
	internal bool
	served   bool // a request was read on it
	req      http1.Request
	resp     http1.Response
	trace    reqTrace // the current request's span (zero with tracing off)
	// idleAt is when the last response ended: the next idle deadline is counted from it
	// rather than from another clock read.
	idleAt time.Time
}

// conns tracks the client connections for drain and the connection limit.
type conns struct {
	mu   sync.Mutex
	set  map[*conn]struct{}
	n    atomic.Int64
	done chan struct{} // closed when the last connection left after drain began
}

// serve is the accept loop of the public listener (over TLS when tc is set), of the
// internal listener (ln is g.intLn: its connections are marked internal) or, with
// redirect, of the plain-HTTP listener that sends every request to https. All read
// requests with the same code; the TLS handshake runs in the connection's goroutine, on
// its first read, under its read deadline.
func (g *Gateway) serve(ln net.Listener, tc *tls.Config, redirect bool) error {
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
		if g.conns.n.Load() >= int64(g.cfg.MaxConns) {
			if tc == nil { // a TLS client could not read a plain answer
				_, _ = c.Write(http1.AppendAnswer(nil, 503, "rouse: too many open connections\n", true, false))
			}
			c.Close()
			continue
		}
		cc := &conn{g: g, c: c, proto: "http", redirect: redirect, internal: g.intLn != nil && ln == g.intLn}
		if tc != nil {
			cc.c, cc.proto = tls.Server(c, tc), "https"
		}
		if !g.conns.add(cc) {
			c.Close()
			continue
		}
		go cc.serve()
	}
}

func (f *conns) add(c *conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.set == nil {
		return false // draining
	}
	f.set[c] = struct{}{}
	f.n.Add(1)
	return true
}

func (f *conns) remove(c *conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.set, c)
	if f.n.Add(-1) == 0 && f.done != nil {
		close(f.done)
		f.done = nil
	}
}

// drain wakes idle connections so they close and returns a channel closed when the last
// connection is gone. hard closes every connection (upgraded ones too).
func (f *conns) drain(hard bool) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	done := make(chan struct{})
	if f.done == nil {
		f.done = done
	} else {
		done = f.done
	}
	for c := range f.set {
		if hard || c.state.CompareAndSwap(connIdle, connClosing) {
			_ = c.c.SetReadDeadline(time.Unix(1, 0))
		}
		if hard {
			c.c.Close()
		}
	}
	if f.n.Load() == 0 {
		close(f.done)
		f.done = nil
	}
	return done
}

func (c *conn) serve() {
	g := c.g
	defer func() {
		g.conns.remove(c)
		c.c.Close()
		g.putBuffers(c)
	}()
	g.getBuffers(c)
	if ta, ok := c.c.RemoteAddr().(*net.TCPAddr); ok {
		c.ip = ta.AddrPort().Addr().Unmap().AppendTo(nil)
	}
	c.remote = &connAddr{Addr: c.c.RemoteAddr(), s: c.c.RemoteAddr().String()}
	if tc, ok := c.c.(*tls.Conn); ok {
		h2, ok := c.handshake(tc)
		if !ok {
			return
		}
		if h2 {
			c.serveH2(nil, nil, nil)
			return
		}
	}
	for first := true; ; first = false {
		n, ok := c.readHead()
		if !ok {
			return
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return // drain began while it waited
		}
		c.served = true
		if n < 0 {
			c.req.Method = nil // no head was parsed: not a HEAD, nothing to log
			c.answer(nil, g.clk.Now(), http1.ErrHeadTooLarge, "", 0, true)
			c.linger()
			return
		}
		if first && !c.redirect && c.proto == "http" && c.isPreface(n) {
			c.serveH2(c.buf[c.r:c.w], nil, nil) // prior knowledge: the preface's rest follows
			return
		}
		if !c.exchange(n) {
			if c.state.Load() != connHTTP2 {
				c.linger()
			}
			return
		}
		if g.draining.Load() || !c.state.CompareAndSwap(connActive, connIdle) {
			return
		}
	}
}

// tlsHandshakeRecord is the first byte of a TLS connection (a handshake record).
const tlsHandshakeRecord = 0x16

// plainFresh: nothing was served on this plain connection yet (its first bytes are the
// first of buf).
func (c *conn) plainFresh() bool { return c.proto == "http" && !c.served }

// readHead reads until buf[r:] holds a whole request head and returns its length, or -1
// when no head fits in MaxHeaderBytes. False: close the connection (it closed, timed
// out or drain began).
func (c *conn) readHead() (int, bool) {
	g := c.g
	var first time.Time
	for {
		// RFC 9112 §2.2: empty lines before a request line are ignored.
		for c.w-c.r >= 2 && c.buf[c.r] == '\r' && c.buf[c.r+1] == '\n' {
			c.r += 2
		}
		if c.r == c.w {
			c.r, c.w = 0, 0
		}
		if i := bytes.Index(c.buf[c.r:c.w], crlfcrlf); i >= 0 {
			c.idleAt = time.Time{} // a pipelined request: the connection was not idle
			if i+4 > g.cfg.MaxHeaderBytes {
				return -1, true
			}
			return i + 4, true
		}
		if c.w-c.r >= g.cfg.MaxHeaderBytes {
			return -1, true
		}
		if c.w == len(c.buf) { // make room at the front
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		}
		now := c.idleAt
		if now.IsZero() || c.w > c.r {
			now = g.clk.Now()
		}
		c.idleAt = time.Time{}
		if c.w > c.r {
			// Part of a head arrived: the rest must come within ReadTimeout (slowloris).
			if first.IsZero() {
				first = now
				c.setReadDeadline(now.Add(g.cfg.ReadTimeout), true)
			}
		} else if dl := now.Add(g.cfg.IdleTimeout); c.readDL.Before(dl) {
			c.setReadDeadline(dl, false)
		}
		n, err := c.c.Read(c.buf[c.w:])
		c.w += n
		if c.w > 0 && c.buf[0] == tlsHandshakeRecord && c.plainFresh() {
			// A TLS client hello on a plain listener: no HTTP can follow, so the
			// connection closes now rather than at ReadTimeout.
			g.metrics.rejected.WithLabelValues("tls_on_plain_listener").Inc()
			return 0, false
		}
		if err != nil {
			if n > 0 {
				continue
			}
			var ne net.Error
			if c.w > c.r && errors.As(err, &ne) && ne.Timeout() && !g.draining.Load() {
				c.timedOut()
			}
			return 0, false
		}
	}
}

// Lingering close (RFC 9112 §9.6): closing a connection with unread bytes on it makes the
// kernel send a reset, which can destroy responses already written before the client read
// them (a pipelined request after a bad one, a body the gateway refused). So the gateway
// half-closes and reads what still comes, for a bounded time and size, first.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

func (c *conn) linger() {
	cw, ok := c.c.(interface{ CloseWrite() error })
	if !ok || c.g.draining.Load() || cw.CloseWrite() != nil {
		return
	}
	_ = c.c.SetReadDeadline(c.g.clk.Now().Add(lingerTime))
	for total := 0; total < lingerBytes; {
		n, err := c.c.Read(c.buf)
		total += n
		if err != nil {
			return
		}
	}
}

func (c *conn) setReadDeadline(t time.Time, exact bool) {
	if !exact {
		t = t.Add(deadlineSlack) // pushed late, never early
	}
	c.readDL = t
	_ = c.c.SetReadDeadline(t)
}

func (c *conn) pushWriteDeadline() {
	wt := c.g.cfg.WriteTimeout
	if wt <= 0 {
		return
	}
	now := c.g.clk.Now()
	if dl := now.Add(wt); c.wrDL.Before(dl) {
		c.wrDL = dl.Add(deadlineSlack)
		_ = c.c.SetWriteDeadline(c.wrDL)
	}
}

// timedOut answers a request that did not arrive within ReadTimeout (slowloris).
func (c *conn) timedOut() {
	c.g.metrics.rejected.WithLabelValues(http1.ErrReadTimeout.Reason).Inc()
	c.pushWriteDeadline()
	_, _ = c.c.Write(http1.AppendAnswer(c.out[:0], 408, http1.ErrReadTimeout.Msg, true, false))
}

// readFull reads until buf[r:] holds n bytes (a head and its small body), moving the
// unread bytes to the front first when they would not fit. moved reports that: slices
// into the old position are then stale. False: the client closed or timed out (a 408
// was sent).
func (c *conn) readFull(n int) (moved, ok bool) {
	g := c.g
	if c.r+n > len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r, moved = 0, true
	}
	if c.w-c.r >= n {
		return moved, true
	}
	c.setReadDeadline(g.clk.Now().Add(g.cfg.ReadTimeout), true)
	for c.w-c.r < n {
		m, err := c.c.Read(c.buf[c.w:])
		c.w += m
		if err != nil && c.w-c.r < n {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !g.draining.Load() {
				c.timedOut()
			}
			return moved, false
		}
	}
	return moved, true
}

// connAddr is a connection's remote address with its text made once, so the access log
// does not format it again for every request of a kept-alive connection.
type connAddr struct {
	net.Addr
	s string
}

func (a *connAddr) String() string { return a.s }

func (g *Gateway) getBuffers(c *conn) {
	if b, ok := g.bufs.Get().(*connBufs); ok {
		c.buf, c.out = b.buf, b.out
		c.req, c.resp = b.req, b.resp
		return
	}
	c.buf = make([]byte, g.cfg.MaxHeaderBytes+prefetchBytes)
	c.out = make([]byte, 0, 4096)
}

func (g *Gateway) putBuffers(c *conn) {
	if c.buf == nil {
		return
	}
	g.bufs.Put(&connBufs{buf: c.buf, out: c.out[:0], req: c.req, resp: c.resp})
	c.buf, c.out = nil, nil
}

// connBufs are a connection's buffers, reused by the next connection.
type connBufs struct {
	buf, out []byte
	req      http1.Request
	resp     http1.Response
}
