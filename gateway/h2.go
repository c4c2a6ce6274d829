// x/net/http2's server is marked deprecated in favour of net/http's own HTTP/2 server,
// which cannot serve a connection handed to it (ServeConn: one whose first bytes were
// read, or an Upgrade: h2c with its request). x/net keeps it working (server_wrap.go).
//lint:file-ignore SA1019 ServeConn has no net/http replacement; see above

package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/rouse-run/rouse/gateway/http1"
)

// HTTP/2 from clients. golang.org/x/net/http2 runs each HTTP/2 connection: frames, HPACK,
// flow control and the protocol's limits. A connection becomes HTTP/2 in one of three
// ways: ALPN "h2" on the TLS listener, the client preface on the plain listener (prior
// knowledge), or an HTTP/1.1 request with Upgrade: h2c on the plain listener (answered
// 101, then served as stream 1). Each stream is one request and takes the same steps as
// an HTTP/1.1 one — route, acquire (hold, queue, limit), forward, account — through the
// same functions (route.go, hold.go); only the reading and writing of HTTP differ.

// The HTTP/2 limits. Each bounds what one client can make the gateway hold.
const (
	// h2MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS: the requests in flight on one
	// connection. A client that opens more is refused per stream (REFUSED_STREAM).
	h2MaxStreams = 250
	// h2StreamWindow and h2ConnWindow bound the request body bytes buffered for a stream
	// and for a connection before the client must wait for the gateway to read them.
	h2StreamWindow = 1 << 20
	h2ConnWindow   = 4 << 20
)

// errClientGone answers (for the access log only: nobody reads it) a stream the client
// reset, or a connection it closed, while its request waited.
var errClientGone = &http1.Error{Status: 499, Reason: "client_gone", Msg: "rouse: the client went away\n"}

// h2Preface is the head readHead finds at the start of an HTTP/2 connection preface.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\n")

// h2engine is the gateway's HTTP/2 server side and its h2c client side.
type h2engine struct {
	srv  *http2.Server
	base *http.Server    // carries MaxHeaderBytes, and GOAWAY on drain (its Shutdown)
	tr   *http.Transport // h2c only
}

func (g *Gateway) newH2() {
	cfg := g.cfg
	// The settings live in net/http's HTTP2Config, which x/net's server reads.
	base := &http.Server{
		MaxHeaderBytes: cfg.MaxHeaderBytes, // SETTINGS_MAX_HEADER_LIST_SIZE, enforced on decode
		IdleTimeout:    cfg.IdleTimeout,
		ErrorLog:       log.New(zapWriter{g.log}, "", 0),
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          h2MaxStreams,
			MaxReceiveBufferPerStream:     h2StreamWindow,
			MaxReceiveBufferPerConnection: h2ConnWindow,
			WriteByteTimeout:              cfg.WriteTimeout,
			CountError:                    func(t string) { g.metrics.h2Errors.WithLabelValues(t).Inc() },
		},
	}
	srv := &http2.Server{}
	// ConfigureServer registers the GOAWAY of every connection with base.Shutdown (drain)
	// and takes base's IdleTimeout.
	_ = http2.ConfigureServer(base, srv)
	g.h2 = h2engine{srv: srv, base: base, tr: g.newH2CTransport()}
}

// zapWriter takes net/http's log lines (HTTP/2 protocol errors) into the gateway's log.
type zapWriter struct{ log *zap.Logger }

func (w zapWriter) Write(p []byte) (int, error) {
	w.log.Debug("http2", zap.ByteString("msg", bytes.TrimSpace(p)))
	return len(p), nil
}

// h2Stream is one connection's handler: what every stream on it shares.
type h2Stream struct {
	g      *Gateway
	ip     []byte
	proto  string
	remote *connAddr
	// internal: the connection came in on the internal listener (route.go).
	internal bool
}

// serveH2 runs the connection as HTTP/2 until it closes: pre are bytes already read
// from it (the preface's start); upgrade is the request an Upgrade: h2c carried.
func (c *conn) serveH2(pre []byte, upgrade *http.Request, settings []byte) {
	g := c.g
	c.state.Store(connHTTP2) // drain sends GOAWAY instead of closing it when idle
	nc := c.c
	if len(pre) > 0 {
		nc = &prefixConn{Conn: c.c, pre: bytes.Clone(pre)}
	}
	g.putBuffers(c)
	_ = c.c.SetDeadline(time.Time{}) // the HTTP/2 server keeps its own timers
	h := &h2Stream{g: g, ip: c.ip, proto: c.proto, remote: c.remote, internal: c.internal}
	g.metrics.h2Conns.Inc()
	// ServeConn, not net/http's Serve: only it takes the request an Upgrade: h2c carried
	// (ServeConnOpts.UpgradeRequest), and a connection whose first bytes were read.
	g.h2.srv.ServeConn(nc, &http2.ServeConnOpts{BaseConfig: g.h2.base, Handler: h, UpgradeRequest: upgrade, Settings: settings})
}

// prefixConn reads pre before the connection's own bytes.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// handshake completes a TLS connection's handshake under ReadTimeout and reports whether
// the client chose HTTP/2. False with ok false: close it.
func (c *conn) handshake(tc *tls.Conn) (h2, ok bool) {
	g := c.g
	c.setReadDeadline(g.clk.Now().Add(g.cfg.ReadTimeout), true)
	if err := tc.Handshake(); err != nil {
		g.metrics.rejected.WithLabelValues("tls_handshake").Inc()
		return false, false
	}
	return tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS, true
}

// isPreface reports whether the head at buf[r:] is the start of the HTTP/2 connection
// preface (prior knowledge h2c).
func (c *conn) isPreface(headLen int) bool {
	return bytes.Equal(c.buf[c.r:c.r+headLen], h2Preface)
}

// upgradeH2C switches the connection to HTTP/2 for a request with Upgrade: h2c (RFC 7540
// §3.2) whose body is all here: 101, then the request is served as stream 1. False:
// the upgrade is declined (the request is served as HTTP/1.1, as RFC 9110 §7.8 allows).
func (c *conn) upgradeH2C(headLen int) bool {
	req := &c.req
	settings, err := base64.RawURLEncoding.DecodeString(string(bytes.TrimRight(req.HTTP2Settings, "=")))
	if err != nil || len(settings)%6 != 0 || !c.bodyBuffered() || req.Body == http1.Chunked || req.Expect100 {
		return false
	}
	if req.Body == http1.Length {
		if _, ok := c.readFull(headLen + int(req.Length)); !ok {
			return true // the connection is gone: nothing to serve
		}
		_ = http1.ParseRequest(c.buf[c.r:c.r+headLen], req) // readFull may have moved it
	}
	hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(c.buf[c.r : c.r+headLen])))
	if err != nil {
		return false
	}
	rest := c.buf[c.r+headLen+int(req.Length) : c.w] // the client preface may be here already
	if k := min(len(rest), len(http2.ClientPreface)); string(rest[:k]) != http2.ClientPreface[:k] {
		return false // HTTP/1.1 pipelined after it: the client did not wait for a 101
	}
	body := c.buf[c.r+headLen : c.r+headLen+int(req.Length)]
	hr.Body = io.NopCloser(bytes.NewReader(bytes.Clone(body)))
	hr.ContentLength = int64(len(body))
	hr.RemoteAddr = c.remote.s
	if c.proto == "https" {
		hr.TLS = &tls.ConnectionState{}
	}
	// The upgrade's own headers are for this hop.
	for _, h := range []string{"Connection", "Upgrade", "Http2-Settings"} {
		hr.Header.Del(h)
	}
	c.pushWriteDeadline()
	if _, err := c.c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")); err != nil {
		return true
	}
	c.serveH2(rest, hr, settings)
	return true
}

// ServeHTTP serves one HTTP/2 stream: one request.
func (h *h2Stream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := h.g
	start := g.clk.Now()
	s := &stream{h: h, w: w, r: r, start: start, grpc: isGRPC(r)}
	if r.Method == http.MethodConnect {
		s.fail(nil, 0, failure{http1.ErrMethod, ""})
		return
	}
	if !http1.ValidHost([]byte(r.Host)) || r.Host == "" {
		s.fail(nil, 0, failure{http1.ErrBadHost, ""})
		return
	}
	rev, f := h.route(r)
	if f != nil {
		s.fail(nil, 0, *f)
		return
	}
	if g.tracer != nil {
		s.trace = g.startTrace(start, rev, r.Method, r.Host, r.RequestURI, r.Header.Get)
	}
	if g.cfg.MaxBodyBytes > 0 && r.ContentLength > g.cfg.MaxBodyBytes {
		s.fail(rev, 0, failure{http1.ErrBodyTooLarge, ""})
		return
	}
	s.deadline = start.Add(rev.timeout())
	if s.grpc {
		if d, ok := grpcTimeout(r.Header.Get("Grpc-Timeout")); ok && start.Add(d).Before(s.deadline) {
			s.deadline = start.Add(d)
		}
	}
	// A small body of known length is read whole before a slot is taken, as for HTTP/1.1:
	// a slow client holds no instance while it sends it, and the request can be sent again
	// on a new connection.
	if r.ContentLength == 0 || r.Body == http.NoBody {
		s.buffered = true
	} else if r.ContentLength > 0 && r.ContentLength <= prefetchBytes && !s.grpc {
		_ = http.NewResponseController(w).SetReadDeadline(start.Add(g.cfg.ReadTimeout))
		s.body = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, s.body); err != nil {
			s.bodyError(rev, 0, err)
			return
		}
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
		s.buffered = true
	}
	in, cold, f := g.acquire(rev, start, s.deadline, r.Context().Done())
	if f != nil {
		s.fail(rev, cold, *f)
		return
	}
	if rev.config().H2C() {
		s.toH2C(rev, in, cold)
		return
	}
	s.toH1(rev, in, cold)
}

// h2 drain: GOAWAY on every HTTP/2 connection; each closes when its streams are done.
func (g *Gateway) drainH2(ctx context.Context) {
	_ = g.h2.base.Shutdown(ctx)
}
