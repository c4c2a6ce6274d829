package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/table"
)

const (
	// prefetchBytes: fasthttp reads up to this much of a body together with the headers.
	// Bodies that fit are forwarded from memory; longer ones stream.
	prefetchBytes = 8 << 10
	// maxDialAttempts bounds the instances tried when connections are refused.
	maxDialAttempts = 4
	// ColdStartHeader carries, on each response to a request that waited for a cold
	// start, how long it waited.
	ColdStartHeader = "X-Rouse-Cold-Start"
)

func (g *Gateway) newPublicServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      g.serve,
		ErrorHandler:                 g.serveError,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		ReadBufferSize:               g.cfg.MaxHeaderBytes,
		WriteBufferSize:              16 << 10,
		ReadTimeout:                  g.cfg.ReadTimeout,
		WriteTimeout:                 g.cfg.WriteTimeout,
		IdleTimeout:                  g.cfg.IdleTimeout,
		MaxRequestBodySize:           prefetchBytes,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		Concurrency:                  g.cfg.MaxConns,
		TCPKeepalive:                 true,
		SecureErrorLogMessage:        true,
		Logger:                       fasthttpLogger{g.log},
	}
}

func (g *Gateway) newBackend(id, addr string, access *zap.Logger) *backend {
	return &backend{id: id, addr: addr, access: access.With(zap.String("instance", addr)), hc: &fasthttp.HostClient{
		Addr:                          addr,
		MaxConns:                      1 << 20, // concurrency is bounded by the pool, not here
		MaxIdleConnDuration:           4 * time.Second,
		MaxIdemponentCallAttempts:     2, // one retry of an idempotent bodyless request on a stale keep-alive connection
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		StreamResponseBody:            true,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
		DialTimeout: func(addr string, d time.Duration) (net.Conn, error) {
			return fasthttp.DialTimeout(addr, min(d, 5*time.Second))
		},
	}}
}

type fasthttpLogger struct{ l *zap.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug("fasthttp", zap.String("msg", fmt.Sprintf(format, args...)))
}

// serveError answers requests fasthttp could not parse or read in time.
func (g *Gateway) serveError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var nerr net.Error
	status, reason, msg := fasthttp.StatusBadRequest, "malformed", "rouse: malformed request\n"
	switch {
	case errors.As(err, &small):
		status, reason, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "header_too_large", "rouse: request headers too large\n"
	case errors.As(err, &nerr) && nerr.Timeout():
		status, reason, msg = fasthttp.StatusRequestTimeout, "read_timeout", msgReadTimeout
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, reason, msg = fasthttp.StatusRequestEntityTooLarge, "body_too_large", "rouse: request body too large\n"
	}
	g.metrics.rejected.WithLabelValues(reason).Inc()
	ctx.SetConnectionClose()
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(msg)
	g.log.Debug("rejected a request", zap.String("reason", reason), zap.Stringer("remote", ctx.RemoteAddr()), zap.Error(err))
}

// exchange is one proxied request; it is also the response body fasthttp streams to the
// client, so its end (CloseWithError) is when the instance's slot is released.
type exchange struct {
	g     *Gateway
	ctx   *fasthttp.RequestCtx
	rev   *revision
	route *table.Route
	inst  *balance.Instance[*backend]
	up    *fasthttp.Response
	start time.Time
	cold  time.Duration

	stream   io.Reader // the upstream body
	status   int
	bytes    int64
	extended time.Time // last time the client write deadline was pushed
	body     reqBody
	buf      []byte
}

var _ fasthttp.ReadCloserWithError = (*exchange)(nil)

// serve is the public handler.
func (g *Gateway) serve(ctx *fasthttp.RequestCtx) {
	start := g.clk.Now()
	rt := g.routing.Load()
	if rt == nil {
		g.reject(ctx, nil, start, fasthttp.StatusServiceUnavailable, "1", "starting", "rouse: the gateway has not read its routes from Consul yet\n")
		return
	}
	route := rt.tbl.Lookup(ctx.Host())
	if route == nil {
		g.metrics.unknownHost.Inc()
		g.reject(ctx, nil, start, fasthttp.StatusNotFound, "", "unknown_host", "rouse: no service for host "+strconv.Quote(string(ctx.Host()))+"\n")
		return
	}
	if conflictingFraming(&ctx.Request.Header) {
		g.reject(ctx, nil, start, fasthttp.StatusBadRequest, "", "conflicting_framing", "rouse: request has both Content-Length and Transfer-Encoding\n")
		return
	}
	rev := takePinned(ctx.Conn())
	if rev == nil || !isTarget(rt, route, rev) {
		tgt := route.Pick(rand.Uint32())
		if tgt == nil {
			g.reject(ctx, nil, start, fasthttp.StatusServiceUnavailable, "", "no_target", "rouse: service "+route.Namespace+"/"+route.Service+" has no revision with a traffic share\n")
			return
		}
		rev = rt.revs[tgt.Index]
	}
	x := g.getExchange()
	x.ctx, x.rev, x.route, x.start, x.extended = ctx, rev, route, start, start
	if isUpgrade(&ctx.Request.Header) {
		g.upgrade(x)
		return
	}
	g.proxy(x)
}

func (g *Gateway) proxy(x *exchange) {
	ctx, rev := x.ctx, x.rev
	h := &ctx.Request.Header
	cl := h.ContentLength()
	if g.cfg.MaxBodyBytes > 0 && int64(cl) > g.cfg.MaxBodyBytes {
		g.fail(x, fasthttp.StatusRequestEntityTooLarge, "", "body_too_large", "rouse: request body too large\n")
		g.putExchange(x)
		return
	}
	deadline := x.start.Add(rev.timeout())
	x.buf = g.prepareRequest(ctx, false, x.buf)

	req := &ctx.Request
	var upReq *fasthttp.Request
	if !streamedBody(cl) {
		if cl > 0 {
			ctx.Request.Body() // read together with the headers: send it from memory
		}
	} else {
		// Stream the rest from the client connection. A separate request object is the way
		// to give fasthttp's client our reader (body limit, per-read client deadline).
		upReq = fasthttp.AcquireRequest()
		h.CopyTo(&upReq.Header)
		x.body = reqBody{r: ctx.RequestBodyStream(), conn: ctx.Conn(), cl: int64(cl), max: g.cfg.MaxBodyBytes, timeout: g.cfg.ReadTimeout, g: g}
		upReq.SetBodyStream(&x.body, cl)
		req = upReq
	}
	req.UseHostHeader = true
	ok := g.roundTrip(x, req, deadline)
	if upReq != nil {
		if !x.body.done() {
			ctx.SetConnectionClose() // unread body bytes are still on the connection
		}
		fasthttp.ReleaseRequest(upReq)
	}
	if !ok {
		g.putExchange(x)
		return
	}

	up := x.up
	stripHopByHop(&up.Header)
	rh := &ctx.Response.Header
	up.Header.CopyTo(rh)
	rh.ResetConnectionClose()
	rh.SetNoDefaultContentType(true)
	if x.cold > 0 {
		rh.SetBytesV(ColdStartHeader, appendMillis(x.buf[:0], x.cold))
	}
	x.status = up.StatusCode()
	if s := up.BodyStream(); s != nil {
		x.stream = s
		ctx.Response.SetBodyStream(x, up.Header.ContentLength())
		return // finish runs when fasthttp has written the body
	}
	x.finish(nil)
}

// roundTrip sends req to an instance (waiting for one if needed, trying another when a
// connection is refused) and leaves the answer in x.up. On failure it has answered the
// client and returns false.
func (g *Gateway) roundTrip(x *exchange, req *fasthttp.Request, deadline time.Time) bool {
	rev := x.rev
	x.up = fasthttp.AcquireResponse()
	for attempt := 1; ; attempt++ {
		if !g.acquire(x, deadline) {
			return false
		}
		err := x.inst.Backend.hc.DoDeadline(req, x.up, deadline)
		if err == nil {
			return true
		}
		in := x.inst
		x.inst = nil
		rev.pool.Release(in)
		if isDialError(err) && attempt < maxDialAttempts && x.body.n == 0 {
			rev.markDown(in) // nothing was sent: try elsewhere, or wait if it was the only one
			continue
		}
		g.log.Debug("upstream failed", zap.String("revision", rev.key), zap.String("instance", in.Backend.addr), zap.Error(err))
		switch {
		case x.body.tooLarge:
			g.fail(x, fasthttp.StatusRequestEntityTooLarge, "", "body_too_large", "rouse: request body too large\n")
		case isTimeout(err):
			g.fail(x, fasthttp.StatusGatewayTimeout, "", "timeout", "rouse: revision "+rev.name+" did not answer within its timeout of "+rev.timeout().String()+"\n")
		default:
			g.fail(x, fasthttp.StatusBadGateway, "", "upstream_error", "rouse: revision "+rev.name+" instance failed: "+err.Error()+"\n")
		}
		return false
	}
}

// acquire gets x a slot on an instance, holding or queueing the request if needed. It
// answers the client itself and returns false when the request cannot be served.
func (g *Gateway) acquire(x *exchange, deadline time.Time) bool {
	rev := x.rev
	in, w, held, err := rev.pool.Acquire()
	if err != nil {
		g.fail(x, fasthttp.StatusServiceUnavailable, "1", "overflow", "rouse: revision "+rev.name+" is at capacity: every instance is busy and the queue is full\n")
		return false
	}
	if in != nil {
		x.inst = in
		return true
	}
	if held > 0 && held&(held-1) == 0 {
		g.activation() // 1, 2, 4, 8… held: tell scalers now, and again as the burst grows
	}
	if w.Held {
		rev.maybeFollow()
	}
	rev.maybeProbe()
	waitStart := g.clk.Now()
	limit := deadline.Sub(waitStart)
	if w.Held {
		limit = min(limit, rev.activationTimeout()-waitStart.Sub(x.start))
	}
	t := g.clk.NewTimer(limit)
	select {
	case in = <-w.C:
	case <-t.C():
		in = rev.pool.Cancel(w)
	case <-g.drainHard:
		in = rev.pool.Cancel(w)
	}
	t.Stop()
	if in == nil {
		_, _, ready := rev.pool.Stats()
		switch {
		case rev.isRetired():
			g.fail(x, fasthttp.StatusServiceUnavailable, "1", "retired", "rouse: revision "+rev.name+" is no longer routed\n")
		case w.Held && ready == 0:
			g.fail(x, fasthttp.StatusServiceUnavailable, "10", "activation_timeout",
				"rouse: revision "+rev.name+" could not be started: no instance became ready within "+rev.activationTimeout().String()+"\n")
		default:
			g.fail(x, fasthttp.StatusGatewayTimeout, "", "queue_timeout", "rouse: revision "+rev.name+" had no free instance within its timeout of "+rev.timeout().String()+"\n")
		}
		return false
	}
	x.inst = in
	if w.Held {
		wait := g.clk.Now().Sub(waitStart)
		x.cold += wait
		rev.cold.Observe(wait.Seconds())
	}
	return true
}

// Read streams the upstream body to fasthttp, pushing the client's write deadline so
// WriteTimeout bounds each pause, not the whole (possibly huge) response.
func (x *exchange) Read(p []byte) (int, error) {
	if wt := x.g.cfg.WriteTimeout; wt > 0 {
		if now := x.g.clk.Now(); now.Sub(x.extended) > time.Second {
			_ = x.ctx.Conn().SetWriteDeadline(now.Add(wt))
			x.extended = now
		}
	}
	n, err := x.stream.Read(p)
	x.bytes += int64(n)
	return n, err
}

// CloseWithError is called by fasthttp when the response is written (or failed).
func (x *exchange) CloseWithError(err error) error {
	x.finish(err)
	return nil
}

// finish releases the upstream response (its connection goes back to the pool if the body
// was read to the end), the instance slot, records metrics and the access log line.
func (x *exchange) finish(werr error) {
	g := x.g
	if x.up != nil {
		fasthttp.ReleaseResponse(x.up)
		x.up = nil
	}
	if x.inst != nil {
		x.rev.pool.Release(x.inst)
	}
	d := g.clk.Now().Sub(x.start)
	x.rev.count(x.status, d)
	g.logAccess(x.ctx, x.rev, x.inst, x.status, x.bytes, d, x.cold, werr)
	g.putExchange(x)
}

// fail answers x's client with an error of the gateway's own (the caller still owns x).
func (g *Gateway) fail(x *exchange, status int, retryAfter, reason, msg string) {
	if x.up != nil {
		fasthttp.ReleaseResponse(x.up)
		x.up = nil
	}
	x.inst = nil
	g.reject(x.ctx, x.rev, x.start, status, retryAfter, reason, msg)
	if x.cold > 0 {
		x.ctx.Response.Header.SetBytesV(ColdStartHeader, appendMillis(x.buf[:0], x.cold))
	}
}

// reject writes a plain-text answer of the gateway's own and accounts for it.
func (g *Gateway) reject(ctx *fasthttp.RequestCtx, rev *revision, start time.Time, status int, retryAfter, reason, msg string) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	if retryAfter != "" {
		ctx.Response.Header.Set("Retry-After", retryAfter)
	}
	ctx.SetBodyString(msg)
	if streamedBody(ctx.Request.Header.ContentLength()) {
		ctx.SetConnectionClose() // we did not read the body: the connection cannot carry another request
	}
	g.metrics.rejected.WithLabelValues(reason).Inc()
	d := g.clk.Now().Sub(start)
	if rev != nil {
		rev.count(status, d)
	}
	g.logAccess(ctx, rev, nil, status, int64(len(msg)), d, 0, nil)
}

// isTarget reports whether rev is one of route's targets in rt: a revision the fast path
// drew may have left the route since (the table is swapped whole). The route's few targets
// are checked, not every routed revision.
func isTarget(rt *routing, route *table.Route, rev *revision) bool {
	for _, t := range route.Targets {
		if rt.revs[t.Index] == rev {
			return true
		}
	}
	return false
}

func (g *Gateway) logAccess(ctx *fasthttp.RequestCtx, rev *revision, in *balance.Instance[*backend], status int, n int64, d, cold time.Duration, werr error) {
	g.logAccessRaw(ctx.Host(), ctx.Method(), ctx.RequestURI(), ctx.RemoteAddr(), rev, in, status, n, d, cold, werr)
}

func (g *Gateway) logAccessRaw(host, method, uri []byte, remote net.Addr, rev *revision, in *balance.Instance[*backend], status int, n int64, d, cold time.Duration, werr error) {
	// The revision's and the instance's fields were encoded into their loggers once.
	log := g.access
	switch {
	case in != nil && in.Backend.access != nil:
		log = in.Backend.access
	case rev != nil && rev.access != nil:
		log = rev.access
	}
	ce := log.Check(zap.InfoLevel, "request")
	if ce == nil {
		return
	}
	fp, _ := g.fields.Get().(*[]zap.Field)
	if fp == nil {
		fp = new([]zap.Field)
	}
	defer func() { clear(*fp); *fp = (*fp)[:0]; g.fields.Put(fp) }()
	fields := append((*fp)[:0],
		zap.ByteString("host", host),
		zap.ByteString("method", method),
		zap.ByteString("uri", uri),
		zap.Int("status", status),
		zap.Int64("bytes", n),
		zap.Duration("duration", d),
		zap.Stringer("remote", remote),
	)
	if cold > 0 {
		fields = append(fields, zap.Duration("cold_start", cold))
	}
	if werr != nil {
		fields = append(fields, zap.NamedError("write_error", werr))
	}
	ce.Write(fields...)
	*fp = fields
}

func (g *Gateway) getExchange() *exchange {
	if x, ok := g.exchanges.Get().(*exchange); ok {
		return x
	}
	return &exchange{g: g}
}

func (g *Gateway) putExchange(x *exchange) {
	buf := x.buf[:0]
	*x = exchange{g: g, buf: buf}
	g.exchanges.Put(x)
}

// reqBody is a streamed request body: it enforces MaxBodyBytes on bodies of unknown
// length and pushes the client's read deadline on each read, so ReadTimeout bounds each
// pause rather than the whole upload.
type reqBody struct {
	r        io.Reader
	conn     net.Conn
	cl, n    int64
	max      int64
	timeout  time.Duration
	g        *Gateway
	eof      bool
	tooLarge bool
}

var errBodyTooLarge = errors.New("request body too large")

func (b *reqBody) Read(p []byte) (int, error) {
	if b.timeout > 0 {
		_ = b.conn.SetReadDeadline(b.g.clk.Now().Add(b.timeout))
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.max > 0 && b.n > b.max {
		b.tooLarge = true
		return n, errBodyTooLarge
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// streamedBody reports whether a body of that Content-Length (-1: chunked, -2: none) is
// still on the client connection when the handler runs.
func streamedBody(cl int) bool { return cl == -1 || cl > prefetchBytes }

// done reports whether the whole body was read from the client.
func (b *reqBody) done() bool { return b.eof || (b.cl >= 0 && b.n >= b.cl) }

// prepareRequest turns the client's request into the upstream one in place: hop-by-hop
// headers go, X-Forwarded-* are set, the protocol is HTTP/1.1 with keep-alive.
func (g *Gateway) prepareRequest(ctx *fasthttp.RequestCtx, upgrade bool, buf []byte) []byte {
	h := &ctx.Request.Header
	stripRequestHopByHop(h, upgrade)
	h.ResetConnectionClose()
	if upgrade {
		h.Set("Connection", "Upgrade")
	}
	h.SetProtocol("HTTP/1.1")
	h.SetNoDefaultContentType(true)

	buf = buf[:0]
	if prior := h.Peek("X-Forwarded-For"); len(prior) > 0 {
		buf = append(append(buf, prior...), ", "...)
	}
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		buf = ta.AddrPort().Addr().Unmap().AppendTo(buf)
	}
	h.SetBytesV("X-Forwarded-For", buf)
	if !g.cfg.TrustForwarded || len(h.Peek("X-Forwarded-Proto")) == 0 {
		if ctx.IsTLS() {
			h.Set("X-Forwarded-Proto", "https")
		} else {
			h.Set("X-Forwarded-Proto", "http")
		}
	}
	if !g.cfg.TrustForwarded || len(h.Peek("X-Forwarded-Host")) == 0 {
		h.SetBytesV("X-Forwarded-Host", h.Host())
	}
	return buf
}

// hopByHop reports the headers RFC 9110 §7.6.1 says a proxy must not forward (framing
// headers are fasthttp's to write).
func hopByHop(k []byte) bool {
	switch len(k) {
	case 2:
		return bytes.EqualFold(k, []byte("TE"))
	case 7:
		return bytes.EqualFold(k, []byte("Trailer")) || bytes.EqualFold(k, []byte("Upgrade"))
	case 10:
		return bytes.EqualFold(k, []byte("Connection")) || bytes.EqualFold(k, []byte("Keep-Alive"))
	case 16:
		return bytes.EqualFold(k, []byte("Proxy-Connection"))
	case 18:
		return bytes.EqualFold(k, []byte("Proxy-Authenticate"))
	case 19:
		return bytes.EqualFold(k, []byte("Proxy-Authorization"))
	}
	return false
}

type headerDeleter interface {
	Peek(key string) []byte
	DelBytes(key []byte)
	Del(key string)
}

// connectionTokens deletes the headers the Connection header names.
func connectionTokens(h headerDeleter, keep string) {
	v := h.Peek("Connection")
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte(","))
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) || (keep != "" && bytes.EqualFold(tok, []byte(keep))) {
			continue
		}
		h.DelBytes(tok)
	}
}

func stripRequestHopByHop(h *fasthttp.RequestHeader, upgrade bool) {
	found := false
	for k := range h.All() {
		if hopByHop(k) {
			found = true
			break
		}
	}
	if !found {
		return
	}
	keep := ""
	if upgrade {
		keep = "Upgrade"
	}
	connectionTokens(h, keep)
	for _, k := range [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer"} {
		h.Del(k)
	}
	if !upgrade {
		h.Del("Upgrade")
	}
}

func stripHopByHop(h *fasthttp.ResponseHeader) {
	found := false
	for k := range h.All() {
		if hopByHop(k) {
			found = true
			break
		}
	}
	if !found {
		return
	}
	connectionTokens(h, "")
	for _, k := range [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Upgrade"} {
		h.Del(k)
	}
}

// conflictingFraming spots a request smuggling attempt fasthttp lets through: it honours
// Transfer-Encoding: chunked and drops Content-Length, but the client sent both (RFC 9112
// §6.3: reject, and close the connection).
func conflictingFraming(h *fasthttp.RequestHeader) bool {
	if h.ContentLength() != -1 {
		return false
	}
	raw := h.RawHeaders()
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		name, _, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")) {
			return true
		}
	}
	return false
}

func isUpgrade(h *fasthttp.RequestHeader) bool {
	return len(h.Peek("Upgrade")) > 0 && bytes.Contains(bytes.ToLower(h.Peek("Connection")), []byte("upgrade"))
}

func isDialError(err error) bool {
	if errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) {
		return true
	}
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}

func appendMillis(b []byte, d time.Duration) []byte {
	return append(strconv.AppendInt(b, d.Milliseconds(), 10), "ms"...)
}
