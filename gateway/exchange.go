package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/upstream"
)

const (
	// maxStaleRetries bounds the new connections tried for a request whose reused
	// connection turned out closed by the instance before it answered anything.
	maxStaleRetries = 2
	// ColdStartHeader carries, on each response to a request that waited for a cold
	// start, how long it waited.
	ColdStartHeader = "X-Rouse-Cold-Start"
)

// failure is an answer of the gateway's own for a request it could not forward, with
// the Retry-After it tells the client ("" for none).
type failure struct {
	*http1.Error
	retryAfter string
}

// exchange serves the request whose head is buf[r:r+headLen] and reports whether the
// connection can carry another.
func (c *conn) exchange(headLen int) bool {
	g, req := c.g, &c.req
	start := g.clk.Now()
	c.trace = reqTrace{}
	if err := http1.ParseRequest(c.buf[c.r:c.r+headLen], req); err != nil {
		var e *http1.Error
		errors.As(err, &e)
		c.answer(nil, start, e, "", 0, true)
		return false
	}
	if c.redirect {
		return c.redirectHTTPS(start)
	}
	if req.H2C && c.proto == "http" && !g.cfg.NoH2CUpgrade && c.upgradeH2C(headLen) {
		return false // served as HTTP/2 until it closed
	}
	rev, f := c.route()
	if f != nil {
		return c.fail(nil, start, 0, *f)
	}
	if g.tracer != nil {
		head := c.buf[c.r : c.r+headLen]
		c.trace = g.startTrace(start, rev, string(req.Method), string(req.Host), string(req.Target), func(k string) string { return string(http1.FirstValue(head, k)) })
	}
	if g.cfg.MaxBodyBytes > 0 && req.Body == http1.Length && req.Length > g.cfg.MaxBodyBytes {
		c.answer(rev, start, http1.ErrBodyTooLarge, "", 0, true)
		return false
	}
	if req.Body == http1.Length && req.Length <= prefetchBytes && !req.Expect100 {
		moved, ok := c.readFull(headLen + int(req.Length))
		if !ok {
			return false
		}
		if moved { // the head's slices point at its old place: read them again there
			_ = http1.ParseRequest(c.buf[c.r:c.r+headLen], req)
		}
	}
	if rev.config().H2C() {
		return c.toH2C(rev, start, headLen)
	}
	if req.Upgrade != nil {
		return c.tunnel(rev, start, headLen)
	}
	return c.forward(rev, start, headLen)
}

// fwd is what the request's forwarded head says of the client and the trace.
func (c *conn) fwd() http1.Forwarded {
	return http1.Forwarded{ClientIP: c.ip, Proto: c.proto, Trust: c.g.cfg.TrustForwarded, Traceparent: c.trace.tp}
}

// slot takes a slot on an instance of rev for the request (holding or queueing it as
// acquire does) and sends 100 Continue when the client waits for it. ok false: the
// request was answered instead, or the client went; keep says whether the connection
// can carry another.
func (c *conn) slot(rev *revision, start, deadline time.Time) (in *balance.Instance[*backend], cold time.Duration, ok, keep bool) {
	in, cold, f := c.g.acquire(rev, start, deadline, nil)
	if f != nil {
		return nil, 0, false, c.fail(rev, start, cold, *f)
	}
	if c.req.Expect100 {
		c.pushWriteDeadline()
		if _, err := c.c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n")); err != nil {
			rev.pool.Release(in)
			return nil, 0, false, false
		}
	}
	return in, cold, true, false
}

// forward sends the request to an instance of rev and relays the answer.
func (c *conn) forward(rev *revision, start time.Time, headLen int) bool {
	g, req := c.g, &c.req
	deadline := start.Add(rev.timeout())
	in, cold, ok, keep := c.slot(rev, start, deadline)
	if !ok {
		return keep
	}

	// The head to send, and as much of the body as is already here.
	head := c.buf[c.r : c.r+headLen]
	out := http1.AppendRequestHead(c.out[:0], head, req, c.fwd(), false)
	body := reqBody{c: c, start: c.r + headLen}
	if err := body.fromBuffer(); err != nil {
		rev.pool.Release(in)
		c.out = out
		return c.answerBodyError(rev, start, cold, err)
	}
	out = append(out, c.buf[body.start:body.start+body.buffered]...)
	c.out = out
	replayable := body.complete()
	lim := newLimits(rev, deadline)

	for stale := 0; ; {
		var uc *upstream.Conn
		var wait time.Duration
		var f *failure
		uc, in, wait, f = g.connect(rev, in, start, deadline, nil)
		cold += wait
		if f != nil {
			return c.fail(rev, start, cold, *f)
		}
		uc.SetDeadline(deadline, rev.timeout())
		_, werr := uc.Write(out)
		if werr == nil && !body.complete() {
			if berr := body.stream(uc); berr != nil {
				uc.Close()
				rev.pool.Release(in)
				return c.answerBodyError(rev, start, cold, berr)
			}
		}
		var rhead []byte
		var err error
		if werr == nil {
			if lim.on() {
				lim.awaitHead(uc, g.clk.Now())
			}
			rhead, err = uc.ReadHead(req.Method, &c.resp)
		} else {
			err = werr
		}
		if err == nil {
			if c.resp.Status == 101 {
				err = http1.ErrUpstream // we did not ask for an upgrade
			} else {
				return c.relay(rev, in, uc, rhead, &body, start, cold, &lim)
			}
		}
		uc.Close()
		switch replay(uc, replayable, stale, req.Method, werr, err) {
		case retrySame:
			stale++
			continue
		case retryOther:
			stale++
			var wait time.Duration
			if in, wait, f = g.another(rev, in, "closed a new connection unanswered", start, deadline, nil); f != nil {
				return c.fail(rev, start, cold+wait, *f)
			}
			cold += wait
			continue
		}
		rev.pool.Release(in)
		return c.fail(rev, start, cold, lim.failure(err))
	}
}

// connect gets a connection to in, the instance whose slot the request holds. When in
// refuses connections it is marked down for a second and the request takes a slot on
// another, waiting for one if need be (wait says how long): when every instance refuses
// — the only one's node is lost and Consul has not said so yet — the request is held as
// for a wake, until an instance takes it or its hold ends, never failed for the refusals
// themselves. On a failure the slot is released.
func (g *Gateway) connect(rev *revision, in *balance.Instance[*backend], start, deadline time.Time, gone <-chan struct{}) (*upstream.Conn, *balance.Instance[*backend], time.Duration, *failure) {
	var cold time.Duration
	for {
		uc, err := in.Backend.pool.Get(start, deadline)
		if err == nil {
			return uc, in, cold, nil
		}
		if !isDialError(err) {
			rev.pool.Release(in)
			f := upstreamFailure(rev, err)
			return nil, nil, cold, &f
		}
		var wait time.Duration
		var f *failure
		in, wait, f = g.another(rev, in, "refused a connection", start, deadline, gone)
		cold += wait
		if f != nil {
			return nil, nil, cold, f
		}
	}
}

// retry is what a request that failed on an instance does next (replay).
type retry int

const (
	noRetry    retry = iota
	retrySame        // again on a new connection to the same instance
	retryOther       // on another instance: this one is going away
)

// replay says whether a request that failed on uc goes again, and where. Again, on a new
// connection to the same instance, when uc was a kept-alive connection the instance closed
// as the request went out (nothing of it was answered) and sending it again cannot run it
// twice: its body is all here (replayable), and it is idempotent or never reached the
// instance (werr). On another instance when uc was a new connection the instance closed
// or reset before any byte of an answer and the request is idempotent: an instance that
// does that to a fresh connection is stopping or dying (its node lost, Nomad stopping it),
// and an idempotent request may be sent again (RFC 9110 §9.2.2; nginx's
// proxy_next_upstream error). Never after a timeout (the instance may be running it) or a
// malformed answer, and at most maxStaleRetries times in all.
func replay(uc *upstream.Conn, replayable bool, tries int, method []byte, werr, err error) retry {
	if uc.Got != 0 || !replayable || tries >= maxStaleRetries || errors.Is(err, http1.ErrUpstream) || isTimeout(err) {
		return noRetry
	}
	switch {
	case uc.Reused && (idempotent(method) || werr != nil):
		return retrySame
	case !uc.Reused && idempotent(method) && (werr != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)):
		return retryOther
	}
	return noRetry
}

// another gives up in's slot, skips in for a second (why says what it did) and takes a
// slot on another instance, or waits for one as acquire does.
func (g *Gateway) another(rev *revision, in *balance.Instance[*backend], why string, start, deadline time.Time, gone <-chan struct{}) (*balance.Instance[*backend], time.Duration, *failure) {
	rev.pool.Release(in)
	rev.markDown(in, why)
	return g.acquire(rev, start, deadline, gone)
}

func upstreamFailure(rev *revision, err error) failure {
	if isTimeout(err) {
		return failure{&http1.Error{Status: 504, Reason: "timeout", Msg: "rouse: revision " + rev.name + " did not answer within its timeout of " + rev.timeout().String() + "\n"}, ""}
	}
	return failure{&http1.Error{Status: 502, Reason: "upstream_error", Msg: "rouse: revision " + rev.name + " instance failed: " + err.Error() + "\n"}, ""}
}

// relay writes the instance's response to the client: the head without hop-by-hop
// headers, then the body as it arrives, unchanged (or without the chunked coding for an
// HTTP/1.0 client). It owns in's slot and uc. lim bounds the body's pauses.
func (c *conn) relay(rev *revision, in *balance.Instance[*backend], uc *upstream.Conn, rhead []byte, body *reqBody, start time.Time, cold time.Duration, lim *limits) bool {
	g, req, resp := c.g, &c.req, &c.resp
	uc.R += resp.HeadLen
	closeClient := req.Close || g.draining.Load() || resp.Body == http1.UntilClose || !body.complete()
	dechunk := req.Minor == 0 && resp.Body == http1.Chunked
	if dechunk {
		resp.Dechunk()
		closeClient = true // the body ends with the connection
	}
	var cs [48]byte
	var extra [][]byte
	if cold > 0 {
		extra = append(extra, coldStartLine(cs[:0], cold))
	}
	out := http1.AppendResponseHead(c.out[:0], rhead, resp, closeClient, req.Minor == 0 && !closeClient && req.KeepAlive10, extra...)
	if lim.on() {
		lim.headRead(uc, g.clk.Now())
	}
	bytesOut, werr, complete := c.relayBody(uc, out, dechunk, lim)
	end := g.clk.Now()
	if complete && !resp.Close {
		in.Backend.pool.Put(uc, end)
	} else {
		uc.Close()
	}
	rev.pool.Release(in)
	c.idleAt = end
	d := end.Sub(start)
	rev.count(resp.Status, d)
	g.logAccess(req, c.trace, c.remote, rev, in, resp.Status, bytesOut, d, cold, werr)
	c.consume(body) // last: it may move the next request's bytes over this one's head
	return werr == nil && complete && !closeClient
}

// relayBody writes out (the head) with the body bytes already read, then the rest as it
// arrives. complete: the body ended where its framing said and nothing followed it (the
// connection can be kept). A read cut off by a timeout returns a timeoutCut as werr.
func (c *conn) relayBody(uc *upstream.Conn, out []byte, dechunk bool, lim *limits) (n int64, werr error, complete bool) {
	fr := &c.framer
	fr.Reset(&c.resp, dechunk)
	// The head and the body bytes read with it go out in one write.
	used, fin, err := fr.Part(uc.Buf[uc.R:uc.W])
	if dechunk {
		out = append(out, fr.Data...)
		n = int64(len(fr.Data))
	} else {
		out = append(out, uc.Buf[uc.R:uc.R+used]...)
		n = int64(used)
	}
	uc.R += used
	c.out = out
	c.pushWriteDeadline()
	if _, werr = c.c.Write(out); werr != nil {
		return n, werr, false
	}
	for err == nil && !fin {
		uc.R, uc.W = 0, 0
		if lim.idle > 0 {
			lim.beforeRead(uc, c.g.clk.Now())
		}
		m, rerr := uc.Conn.Read(uc.Buf)
		uc.W = m
		if m > 0 {
			fr.Data = fr.Data[:0]
			used, fin, err = fr.Part(uc.Buf[:m])
			uc.R = used
			chunk := uc.Buf[:used]
			if dechunk {
				chunk = fr.Data
			}
			if len(chunk) > 0 {
				c.pushWriteDeadline()
				if _, werr = c.c.Write(chunk); werr != nil {
					return n, werr, false
				}
				n += int64(len(chunk))
			}
		}
		if rerr != nil && err == nil && !fin {
			if rerr == io.EOF && c.resp.Body == http1.UntilClose {
				return n, nil, false
			}
			if cut := lim.cutErr(rerr); cut != nil {
				rerr = cut
			}
			return n, rerr, false // the client sees a cut-off body, then a close
		}
	}
	if err != nil {
		return n, http1.ErrUpstream, false
	}
	return n, nil, uc.R == uc.W
}

// consume drops the served request (head and body) from the read buffer.
func (c *conn) consume(b *reqBody) {
	c.r = b.start + b.buffered
	if b.leftover != nil { // bytes after a streamed body: the next request's start
		c.r, c.w = 0, copy(c.buf, b.leftover)
		b.leftover = nil
	}
}

// fail answers f for a request that was not forwarded; the request's body (if any) is
// unread, so the connection closes unless the body was all here.
func (c *conn) fail(rev *revision, start time.Time, cold time.Duration, f failure) bool {
	req := &c.req
	close := req.Close || !c.bodyBuffered()
	c.answer(rev, start, f.Error, f.retryAfter, cold, close)
	if !close {
		c.r += req.HeadLen + int(req.Length)
	}
	return !close
}

// bodyBuffered reports whether the whole request body is in buf (so the next request
// can be found after it).
func (c *conn) bodyBuffered() bool {
	req := &c.req
	switch req.Body {
	case http1.NoBody:
		return true
	case http1.Length:
		return int64(c.w-c.r-req.HeadLen) >= req.Length
	}
	return false
}

// answerBodyError answers a request whose body could not be read or forwarded; the
// connection closes.
func (c *conn) answerBodyError(rev *revision, start time.Time, cold time.Duration, err error) bool {
	var e *http1.Error
	if !errors.As(err, &e) {
		if isTimeout(err) {
			e = http1.ErrReadTimeout
		} else {
			if errors.Is(err, errClientBody) {
				c.g.metrics.rejected.WithLabelValues("client_gone").Inc()
				return false
			}
			e = upstreamFailure(rev, err).Error // the instance stopped reading the body
		}
	}
	c.answer(rev, start, e, "", cold, true)
	return false
}

// answer writes an answer of the gateway's own and accounts for it. To a request that
// starts "HEAD " it has no body, even when the rest of the request is refused (malformed,
// too large): a HEAD client reads nothing after the head, so a body would be its next
// response.
func (c *conn) answer(rev *revision, start time.Time, e *http1.Error, retryAfter string, cold time.Duration, close bool) {
	var lines [][]byte
	if retryAfter != "" {
		lines = append(lines, []byte("Retry-After: "+retryAfter+"\r\n"))
	}
	var cs [48]byte
	if cold > 0 {
		lines = append(lines, coldStartLine(cs[:0], cold))
	}
	c.answerWith(rev, start, e, cold, close, lines...)
}

// answerWith is answer with the extra header lines already built.
func (c *conn) answerWith(rev *revision, start time.Time, e *http1.Error, cold time.Duration, close bool, lines ...[]byte) {
	g := c.g
	c.out = http1.AppendAnswer(c.out[:0], e.Status, e.Msg, close, c.headRequest(), lines...)
	// Counted before the client can read the answer: gauges then never lag it.
	g.metrics.rejected.WithLabelValues(e.Reason).Inc()
	d := g.clk.Now().Sub(start)
	if rev != nil {
		rev.count(e.Status, d)
	}
	c.pushWriteDeadline()
	_, werr := c.c.Write(c.out)
	if c.req.Method != nil {
		g.logAccess(&c.req, c.trace, c.remote, rev, nil, e.Status, int64(len(e.Msg)), d, cold, werr)
	}
	c.idleAt = g.clk.Now()
}

// redirectHTTPS answers a request of the redirect listener: 308 (the method and body
// stay as they are, RFC 9110 §15.4.9) to the same host and target over https, on the
// public listener's port when it is not 443. Host and target were checked by
// ParseRequest: neither can end the Location line early.
func (c *conn) redirectHTTPS(start time.Time) bool {
	req := &c.req
	host := req.Host
	if len(host) == 0 { // HTTP/1.0 may omit it: there is no URL to send the client to
		c.answer(nil, start, &http1.Error{Status: 400, Reason: "https_redirect_no_host", Msg: "rouse: this service is served over https; send a Host header\n"}, "", 0, true)
		return false
	}
	if h, _, err := net.SplitHostPort(string(host)); err == nil {
		host = []byte(h)
		if bytes.IndexByte(host, ':') >= 0 {
			host = []byte("[" + h + "]") // an IPv6 literal
		}
	}
	loc := append([]byte("Location: https://"), host...)
	loc = append(append(append(loc, c.g.httpsPort...), req.Path...), "\r\n"...)
	e := &http1.Error{Status: 308, Reason: "https_redirect", Msg: "rouse: this service is served over https\n"}
	close := req.Close || !c.bodyBuffered()
	c.answerWith(nil, start, e, 0, close, loc)
	if !close {
		c.r += req.HeadLen + int(req.Length)
	}
	return !close
}

// coldStartLine appends the header line that tells a client how long its request waited
// for a cold start.
func coldStartLine(dst []byte, cold time.Duration) []byte {
	return append(http1.AppendMillis(append(dst, ColdStartHeader+": "...), cold.Milliseconds()), '\r', '\n')
}

// headRequest reports whether the request at buf[r:] starts "HEAD ": whatever else is
// wrong with it, its client reads no body after an answer's head.
func (c *conn) headRequest() bool {
	return bytes.HasPrefix(c.buf[c.r:c.w], []byte("HEAD "))
}

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE":
		return true
	}
	return false
}

func isDialError(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}
