package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/upstream"
)

// stream is one HTTP/2 request as the gateway serves it.
type stream struct {
	h               *h2Stream
	w               http.ResponseWriter
	r               *http.Request
	start, deadline time.Time
	grpc            bool // a gRPC call: the gateway's own answers are gRPC statuses
	// buffered: the whole request body is in body (read before a slot was taken).
	buffered bool
	body     []byte
	trace    reqTrace // the stream's span (zero with tracing off)
}

// h2bufs are one stream's buffers for an HTTP/1.1 instance, reused by the next stream.
type h2bufs struct {
	out  []byte
	resp http1.Response
	fr   http1.Framer
	buf  []byte // request body chunks on their way to the instance
}

func (s *stream) fwd() http1.Forwarded {
	return http1.Forwarded{ClientIP: s.h.ip, Proto: s.h.proto, Trust: s.h.g.cfg.TrustForwarded, Traceparent: s.trace.tp}
}

// toH1 forwards the stream to an instance that speaks HTTP/1.1, over the same kept-alive
// connections (package upstream) and by the same rules (package http1) as an HTTP/1.1
// request, and relays the answer as HTTP/2. It owns in's slot.
func (s *stream) toH1(rev *revision, in *balance.Instance[*backend], cold time.Duration) {
	g, r := s.h.g, s.r
	b, _ := g.h2bufs.Get().(*h2bufs)
	if b == nil {
		b = &h2bufs{out: make([]byte, 0, 4096)}
	}
	defer g.h2bufs.Put(b)
	o := http1.Outgoing{Method: r.Method, Path: r.RequestURI, Host: r.Host, Header: r.Header}
	switch {
	case s.buffered && len(s.body) > 0:
		o.Body, o.Length = http1.Length, int64(len(s.body))
	case s.buffered:
	case r.ContentLength > 0:
		o.Body, o.Length = http1.Length, r.ContentLength
	default:
		o.Body = http1.Chunked
	}
	out, err := http1.AppendOutgoing(b.out[:0], &o, s.fwd())
	if err != nil {
		rev.pool.Release(in)
		s.fail(rev, cold, failure{http1.ErrMalformed, ""})
		return
	}
	out = append(out, s.body...)
	b.out = out
	method := []byte(r.Method)
	gone := r.Context().Done()
	lim := newLimits(rev, s.deadline)
	for stale := 0; ; {
		var uc *upstream.Conn
		var wait time.Duration
		var f *failure
		uc, in, wait, f = g.connect(rev, in, s.start, s.deadline, gone)
		cold += wait
		if f != nil {
			s.fail(rev, cold, *f)
			return
		}
		uc.SetDeadline(s.deadline, rev.timeout())
		_, werr := uc.Write(out)
		if werr == nil && !s.buffered {
			if berr := s.sendBody(uc, b, o.Body == http1.Chunked); berr != nil {
				uc.Close()
				rev.pool.Release(in)
				s.bodyError(rev, cold, berr)
				return
			}
		}
		var rhead []byte
		if werr == nil {
			if lim.on() {
				lim.awaitHead(uc, g.clk.Now())
			}
			rhead, err = uc.ReadHead(method, &b.resp)
		} else {
			err = werr
		}
		if err == nil {
			if b.resp.Status == 101 {
				err = http1.ErrUpstream // we did not ask for an upgrade
			} else {
				s.relayH1(rev, in, uc, rhead, b, cold, &lim)
				return
			}
		}
		uc.Close()
		switch replay(uc, s.buffered, stale, method, werr, err) {
		case retrySame:
			stale++
			continue
		case retryOther:
			stale++
			var wait time.Duration
			if in, wait, f = g.another(rev, in, "closed a new connection unanswered", s.start, s.deadline, gone); f != nil {
				s.fail(rev, cold+wait, *f)
				return
			}
			cold += wait
			continue
		}
		rev.pool.Release(in)
		s.fail(rev, cold, lim.failure(err))
		return
	}
}

// errInstanceBody: the instance stopped reading the request body.
var errInstanceBody = errors.New("sending the request body")

// sendBody streams the request body to uc as it arrives, chunked when its length is not
// known. Each read from the client waits at most ReadTimeout.
func (s *stream) sendBody(uc *upstream.Conn, b *h2bufs, chunked bool) error {
	g := s.h.g
	if b.buf == nil {
		b.buf = make([]byte, streamBufSize+32)
	}
	rc := http.NewResponseController(s.w)
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	var total int64
	for {
		_ = rc.SetReadDeadline(g.clk.Now().Add(g.cfg.ReadTimeout))
		// Leave room in front for a chunk's size line.
		const lead = 16
		m, err := s.r.Body.Read(b.buf[lead : lead+streamBufSize])
		if m > 0 {
			if total += int64(m); g.cfg.MaxBodyBytes > 0 && total > g.cfg.MaxBodyBytes {
				return http1.ErrBodyTooLarge
			}
			p := b.buf[lead : lead+m]
			if chunked {
				var sz [20]byte
				size := append(strconv.AppendInt(sz[:0], int64(m), 16), '\r', '\n')
				p = b.buf[lead-len(size) : lead+m]
				copy(p, size)
				p = append(p, '\r', '\n')
			}
			if _, werr := uc.Write(p); werr != nil {
				return fmt.Errorf("%w: %w", errInstanceBody, werr)
			}
		}
		if err == io.EOF {
			if chunked {
				if _, werr := uc.Write([]byte("0\r\n\r\n")); werr != nil {
					return fmt.Errorf("%w: %w", errInstanceBody, werr)
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// relayH1 writes an HTTP/1.1 instance's response as the stream's: its fields without
// hop-by-hop and framing ones, then the body's data as it arrives, flushed as it comes
// when the response streams. lim bounds the body's pauses.
func (s *stream) relayH1(rev *revision, in *balance.Instance[*backend], uc *upstream.Conn, rhead []byte, b *h2bufs, cold time.Duration, lim *limits) {
	g := s.h.g
	resp := &b.resp
	if lim.on() {
		lim.headRead(uc, g.clk.Now())
	}
	uc.R += resp.HeadLen
	if resp.Body == http1.Chunked {
		resp.Dechunk()
	}
	hdr := s.w.Header()
	resp.Fields(rhead, func(name, value []byte) {
		k := http.CanonicalHeaderKey(string(name))
		hdr[k] = append(hdr[k], string(value))
	})
	relayedFields(hdr, cold)
	s.w.WriteHeader(resp.Status)
	fr := &b.fr
	fr.Reset(resp, true)
	var n int64
	var werr error
	sw := s.writer()
	write := func(p []byte, more bool) {
		if len(p) == 0 || werr != nil {
			return
		}
		k, err := sw.Write(p)
		n += int64(k)
		if werr = err; err == nil && more {
			werr = sw.rc.Flush()
		}
	}
	part := func(raw []byte) []byte {
		if fr.Dechunking() {
			return fr.Data
		}
		return raw
	}
	fr.Data = fr.Data[:0]
	used, fin, err := fr.Part(uc.Buf[uc.R:uc.W])
	write(part(uc.Buf[uc.R:uc.R+used]), !fin)
	uc.R += used
	for err == nil && !fin && werr == nil {
		uc.R, uc.W = 0, 0
		if lim.idle > 0 {
			lim.beforeRead(uc, g.clk.Now())
		}
		m, rerr := uc.Conn.Read(uc.Buf)
		uc.W = m
		if m > 0 {
			fr.Data = fr.Data[:0]
			used, fin, err = fr.Part(uc.Buf[:m])
			uc.R = used
			write(part(uc.Buf[:used]), !fin)
		}
		if rerr != nil && err == nil && !fin {
			if rerr == io.EOF && resp.Body == http1.UntilClose {
				fin = true
				break
			}
			err = rerr
		}
	}
	end := g.clk.Now()
	complete := err == nil && fin && werr == nil && uc.R == uc.W
	if complete && !resp.Close && resp.Body != http1.UntilClose {
		in.Backend.pool.Put(uc, end)
	} else {
		uc.Close()
	}
	rev.pool.Release(in)
	d := end.Sub(s.start)
	rev.count(resp.Status, d)
	logged := werr
	if cut := lim.cutErr(err); cut != nil && werr == nil {
		logged = cut
	}
	g.logAccess2(s.r, s.trace, s.h.remote, rev, in, resp.Status, n, d, cold, logged)
	if err != nil && werr == nil {
		// The instance broke off its body (or its framing): the client must not take a
		// cut-off body for a whole one, so the stream is reset rather than ended.
		panic(http.ErrAbortHandler)
	}
}

// relayedFields finishes the fields of an instance's response relayed as HTTP/2: what
// the instance did not send, the client does not get (net/http would add a sniffed
// Content-Type and a Date), and the cold-start wait is added.
func relayedFields(h http.Header, cold time.Duration) {
	for _, k := range []string{"Content-Type", "Date"} {
		if _, ok := h[k]; !ok {
			h[k] = nil
		}
	}
	setColdStart(h, cold)
}

// setColdStart adds the cold-start wait, as coldStartLine does for HTTP/1.1.
func setColdStart(h http.Header, cold time.Duration) {
	if cold > 0 {
		h.Set(ColdStartHeader, string(http1.AppendMillis(nil, cold.Milliseconds())))
	}
}

// streamWriter writes a stream's response body with a deadline on each write, as the
// HTTP/1.1 engine does: a client that stops reading — a flow-control window left at 0, or
// a connection it does not read — is cut off after WriteTimeout, and the instance slot
// the stream holds is released, rather than held until the client goes.
type streamWriter struct {
	s  *stream
	rc *http.ResponseController
	dl time.Time
}

func (s *stream) writer() *streamWriter {
	return &streamWriter{s: s, rc: http.NewResponseController(s.w)}
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if wt := w.s.h.g.cfg.WriteTimeout; wt > 0 {
		// Pushed only when it moved by the slack, as for HTTP/1.1: a timer reset per write
		// is a cost on every chunk of a stream.
		if dl := w.s.h.g.clk.Now().Add(wt); w.dl.Before(dl) {
			w.dl = dl.Add(deadlineSlack)
			_ = w.rc.SetWriteDeadline(w.dl)
		}
	}
	return w.s.w.Write(p)
}

// Flush sends what was written (http.Flusher, for copyFlush).
func (w *streamWriter) Flush() { _ = w.rc.Flush() }

// fail answers a stream the gateway could not forward, and accounts for it. A gRPC call
// gets a gRPC status (a "trailers-only" response: HTTP 200, content-type
// application/grpc, grpc-status and grpc-message), so its client shows the reason
// rather than "unexpected content-type".
func (s *stream) fail(rev *revision, cold time.Duration, f failure) {
	g := s.h.g
	g.metrics.rejected.WithLabelValues(f.Reason).Inc()
	d := g.clk.Now().Sub(s.start)
	if f.Error == errClientGone {
		g.logAccess2(s.r, s.trace, s.h.remote, rev, nil, f.Status, 0, d, cold, nil)
		return // the stream is reset: there is no one to answer
	}
	if rev != nil {
		rev.count(f.Status, d)
	}
	hdr := s.w.Header()
	if f.retryAfter != "" {
		hdr.Set("Retry-After", f.retryAfter)
	}
	setColdStart(hdr, cold)
	var n int
	if s.grpc {
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", strconv.Itoa(grpcCode(f.Status)))
		hdr.Set("Grpc-Message", grpcMessage(strings.TrimSpace(f.Msg)))
		s.w.WriteHeader(http.StatusOK)
	} else {
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		hdr.Set("Content-Length", strconv.Itoa(len(f.Msg)))
		s.w.WriteHeader(f.Status)
		if s.r.Method != http.MethodHead {
			n, _ = io.WriteString(s.w, f.Msg)
		}
	}
	g.logAccess2(s.r, s.trace, s.h.remote, rev, nil, f.Status, int64(n), d, cold, nil)
}

// bodyError answers a stream whose request body could not be read or forwarded.
func (s *stream) bodyError(rev *revision, cold time.Duration, err error) {
	var e *http1.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, errInstanceBody):
		s.fail(rev, cold, upstreamFailure(rev, err))
		return
	case isTimeout(err):
		e = http1.ErrReadTimeout
	default:
		e = errClientGone // the client reset the stream or closed the connection
	}
	s.fail(rev, cold, failure{e, ""})
}

// grpcCode is the gRPC status for an answer of the gateway's own.
func grpcCode(status int) int {
	switch status {
	case 499:
		return 1 // CANCELLED
	case 404:
		return 5 // NOT_FOUND: no service for the host
	case 408, 504:
		return 4 // DEADLINE_EXCEEDED
	case 413, 431:
		return 8 // RESOURCE_EXHAUSTED
	case 501, 505:
		return 12 // UNIMPLEMENTED
	case 502, 503:
		return 14 // UNAVAILABLE: retryable
	case 400, 417:
		return 13 // INTERNAL
	}
	return 2 // UNKNOWN
}

// grpcMessage percent-encodes a grpc-message value (gRPC over HTTP/2: bytes outside
// printable ASCII, and '%', are %XX).
func grpcMessage(m string) string {
	var b strings.Builder
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < ' ' || c > '~' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isGRPC reports whether a request is a gRPC call.
func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// grpcTimeoutValue writes d as a grpc-timeout value: at most 8 digits (the gRPC over
// HTTP/2 spec; grpc-go refuses more), in the finest unit that fits.
func grpcTimeoutValue(d time.Duration) string {
	const maxDigits = 99999999
	for _, u := range []struct {
		unit time.Duration
		c    string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if v := int64(d / u.unit); v <= maxDigits {
			return strconv.FormatInt(max(v, 1), 10) + u.c
		}
	}
	return strconv.FormatInt(min(int64(d/time.Hour), maxDigits), 10) + "H"
}

// grpcTimeout parses a grpc-timeout value: 1 to 8 digits and a unit (H M S m u n).
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseUint(v[:len(v)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}
