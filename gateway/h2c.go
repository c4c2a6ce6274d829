package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/watch"
)

// HTTP/2 to instances, for revisions with protocol = "h2c". One client transport holds
// a multiplexed connection per instance address; the gateway still picks the instance
// for every request (every stream) by least load under the per-instance limit, so one
// client connection carrying many calls spreads over all instances — what plain L4
// balancing of HTTP/2 cannot do.

func (g *Gateway) newH2CTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // h2c with prior knowledge, and nothing else
	return &http.Transport{
		Protocols:              &p,
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression:     true, // bodies pass as they are
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: int64(g.cfg.MaxHeaderBytes) * 4,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second, // a PING finds a dead connection
			PingTimeout:     5 * time.Second,
			CountError:      func(t string) { g.metrics.h2Errors.WithLabelValues("upstream_" + t).Inc() },
		},
	}
}

// bodyWatch wraps a request body handed to the transport: it records whether any of it
// was read (a request whose body was untouched can go to another instance), counts it
// against MaxBodyBytes, and leaves closing to the server that owns it.
type bodyWatch struct {
	rc    io.ReadCloser
	read  atomic.Bool
	total int64
	max   int64
	wd    *watchdog // nil: none
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.rc.Read(p)
	if n > 0 {
		b.wd.touch()
	}
	if err == io.EOF {
		b.wd.bodyEnd()
	}
	if b.total += int64(n); b.max > 0 && b.total > b.max {
		return n, http1.ErrBodyTooLarge
	}
	return n, err
}

func (b *bodyWatch) Close() error { return nil }

// h2cRequest is the request to send to instance addr: the client's, with this hop's
// fields rewritten as for HTTP/1.1 (no hop-by-hop fields, X-Forwarded-* by the same
// rules), and a gRPC deadline that counts the time the call already waited.
func h2cRequest(ctx context.Context, r *http.Request, addr string, hdr http.Header, body io.ReadCloser, fwd http1.Forwarded, deadline time.Time, now time.Time, grpc bool) *http.Request {
	u := *r.URL
	u.Scheme, u.Host = "http", addr
	out := (&http.Request{
		Method: r.Method, URL: &u, Host: r.Host, Header: hdr,
		Proto: "HTTP/2.0", ProtoMajor: 2, Body: body, ContentLength: r.ContentLength,
		Trailer: r.Trailer,
	}).WithContext(ctx)
	if body == nil || body == http.NoBody {
		out.Body, out.ContentLength = http.NoBody, 0
	}
	forwardedFields(hdr, fwd, r.Host)
	if grpc {
		if left := deadline.Sub(now); left > 0 {
			hdr.Set("Grpc-Timeout", grpcTimeoutValue(left))
		}
	}
	return out
}

// copyFields copies the fields of a request that may go to the next hop.
func copyFields(dst, src http.Header) {
	for k, vs := range src {
		if k == "Te" { // hop-by-hop, but "trailers" means something end to end (gRPC needs it)
			for _, v := range vs {
				if v == "trailers" {
					dst["Te"] = []string{"trailers"}
				}
			}
			continue
		}
		if http1.EndToEnd(k) {
			dst[k] = vs
		}
	}
}

// forwardedFields sets X-Forwarded-* on a request to an h2c instance by the rules of
// http1.AppendRequestHead.
func forwardedFields(h http.Header, fwd http1.Forwarded, host string) {
	xff := ""
	for _, v := range h.Values("X-Forwarded-For") {
		if v != "" {
			xff += v + ", "
		}
	}
	h.Set("X-Forwarded-For", xff+string(fwd.ClientIP))
	if p := h.Get("X-Forwarded-Proto"); !fwd.Trust || p == "" {
		h.Set("X-Forwarded-Proto", fwd.Proto)
	}
	if fh := h.Get("X-Forwarded-Host"); !fwd.Trust || fh == "" {
		h.Set("X-Forwarded-Host", host)
	}
	if fwd.Traceparent != nil {
		h.Set("Traceparent", string(fwd.Traceparent))
	}
}

// toH2C forwards the stream to an h2c instance, streaming both ways (a bidirectional
// gRPC call is a request body and a response body at once), with trailers.
func (s *stream) toH2C(rev *revision, in *balance.Instance[*backend], cold time.Duration) {
	g, r := s.h.g, s.r
	var body io.ReadCloser = http.NoBody
	var watch *bodyWatch
	switch {
	case s.buffered && len(s.body) > 0:
		body = io.NopCloser(bytes.NewReader(s.body))
	case !s.buffered:
		watch = &bodyWatch{rc: r.Body, max: g.cfg.MaxBodyBytes}
		body = watch
	}
	ctx, cancel := context.WithDeadline(r.Context(), s.deadline)
	defer cancel()
	ctx, wd := newWatchdog(ctx, g, rev, watch != nil)
	defer wd.stop()
	if watch != nil {
		watch.wd = wd // the client's bytes of a streaming call are activity too
	}
	hdr := make(http.Header, len(r.Header)+3)
	copyFields(hdr, r.Header)
	resp, in, cold, f := g.roundTripH2C(ctx, rev, in, cold, s.start, s.deadline, func(addr string) *http.Request {
		if s.buffered && len(s.body) > 0 {
			body = io.NopCloser(bytes.NewReader(s.body)) // a fresh reader for each instance tried
		}
		return h2cRequest(ctx, r, addr, hdr.Clone(), body, s.fwd(), s.deadline, g.clk.Now(), s.grpc)
	}, func() bool { return watch == nil || !watch.read.Load() })
	if f != nil {
		if r.Context().Err() != nil {
			f = &failure{errClientGone, ""}
		}
		s.fail(rev, cold, *f)
		return
	}
	defer resp.Body.Close()
	wd.headers()
	var rb io.Reader = resp.Body
	if wd != nil && wd.idle > 0 {
		rb = touchReader{resp.Body, wd}
	}
	w := s.w
	dst := w.Header()
	for k, vs := range resp.Header {
		dst[k] = vs
	}
	relayedFields(dst, cold)
	w.WriteHeader(resp.StatusCode)
	n, werr, rerr := copyFlush(s.writer(), rb, resp.ContentLength < 0, g)
	for k, vs := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vs
	}
	rev.pool.Release(in)
	end := g.clk.Now()
	d := end.Sub(s.start)
	rev.count(resp.StatusCode, d)
	logged := werr
	if rerr != nil && werr == nil {
		logged = cutByContext(ctx, s.deadline, g)
	}
	g.logAccess2(r, s.trace, s.h.remote, rev, in, resp.StatusCode, n, d, cold, logged)
	if rerr != nil && werr == nil {
		panic(http.ErrAbortHandler) // the instance broke off: reset, not a clean end
	}
}

// roundTripH2C sends the request build makes for an instance's address, on in or, when
// in refuses connections before any of the request was sent (fresh reports that), on
// another instance: the same rule as connect for HTTP/1.1. On a failure the slot is
// released.
func (g *Gateway) roundTripH2C(ctx context.Context, rev *revision, in *balance.Instance[*backend], cold time.Duration, start, deadline time.Time, build func(addr string) *http.Request, fresh func() bool) (*http.Response, *balance.Instance[*backend], time.Duration, *failure) {
	for {
		resp, err := g.h2.tr.RoundTrip(build(in.Backend.addr))
		if err == nil {
			return resp, in, cold, nil
		}
		var f failure
		switch reason := watchdogReason(ctx); {
		case errors.Is(err, http1.ErrBodyTooLarge):
			f = failure{http1.ErrBodyTooLarge, ""}
		case reason != "":
			f = timeoutFailure(rev, reason)
		case errors.Is(ctx.Err(), context.DeadlineExceeded) || isTimeout(err) || !g.clk.Now().Before(deadline.Add(-deadlineNear)):
			// At the deadline the instance, told the time left in grpc-timeout, may
			// give up a moment before the gateway does (a gRPC server resets the stream):
			// that is the deadline too, not a failed instance.
			f = upstreamFailure(rev, timeoutError{})
		default:
			f = upstreamFailure(rev, err)
		}
		if !isDialError(err) || !fresh() || ctx.Err() != nil {
			rev.pool.Release(in)
			return nil, nil, cold, &f
		}
		var wait time.Duration
		var af *failure
		in, wait, af = g.another(rev, in, "refused a connection", start, deadline, ctx.Done())
		cold += wait
		if af != nil {
			return nil, nil, cold, af
		}
	}
}

// cutByContext is the error to log for an h2c response whose body broke off: the
// timeout that ended it, if one did, else nil.
func cutByContext(ctx context.Context, deadline time.Time, g *Gateway) error {
	if reason := watchdogReason(ctx); reason != "" {
		return timeoutCut(reason)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || !g.clk.Now().Before(deadline.Add(-deadlineNear)) {
		return timeoutCut(reasonTimeout)
	}
	return nil
}

// deadlineNear: a failure this close to the request's deadline is taken for the deadline.
const deadlineNear = 10 * time.Millisecond

// timeoutError makes upstreamFailure answer 504.
type timeoutError struct{}

func (timeoutError) Error() string   { return "timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// copyFlush copies a response body to w, flushing after each read when it streams.
func copyFlush(w io.Writer, body io.Reader, stream bool, g *Gateway) (n int64, werr, rerr error) {
	bp, _ := g.streamBufs.Get().(*[]byte)
	if bp == nil {
		buf := make([]byte, streamBufSize)
		bp = &buf
	}
	defer g.streamBufs.Put(bp)
	buf := *bp
	for {
		m, err := body.Read(buf)
		if m > 0 {
			k, e := w.Write(buf[:m])
			n += int64(k)
			if e != nil {
				return n, e, nil
			}
			if stream {
				if f, ok := w.(http.Flusher); ok {
					f.Flush()
				}
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, nil, err
		}
	}
}

// probeH2C asks an h2c instance whether it is ready: the gRPC health check of the
// server, or an HTTP/2 GET of its readiness path (2xx).
func (g *Gateway) probeH2C(addr, path string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	var req *http.Request
	if path == watch.ProbeGRPC {
		// grpc.health.v1.HealthCheckRequest{service: ""} is the empty message: a
		// length-prefixed message of 0 bytes.
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/grpc.health.v1.Health/Check", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
	} else {
		u := &url.URL{Scheme: "http", Host: addr, Opaque: path}
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		req.URL = u
	}
	resp, err := g.h2.tr.RoundTrip(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if path != watch.ProbeGRPC {
		return resp.StatusCode/100 == 2
	}
	// HealthCheckResponse{status: SERVING} is field 1 varint 1: bytes 08 01 after the
	// 5-byte prefix; grpc-status 0 in the trailers.
	st := resp.Trailer.Get("Grpc-Status")
	if st == "" {
		st = resp.Header.Get("Grpc-Status")
	}
	return resp.StatusCode == 200 && st == "0" && len(b) == 7 && b[5] == 0x08 && b[6] == 0x01
}
