package gateway

import (
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/http1"
)

// logAccess writes the access log line of an HTTP/1.1 request.
// The request's span (t, zero with tracing off) ends here too: every way a request ends
// passes through one of the two.
func (g *Gateway) logAccess(req *http1.Request, t reqTrace, remote net.Addr, rev *revision, in *balance.Instance[*backend], status int, n int64, d, cold time.Duration, werr error) {
	g.endTrace(t, in, status, cold, werr)
	ce := g.accessEntry(rev, in)
	if ce == nil {
		return
	}
	fp := g.accessFields()
	fields := append((*fp)[:0], zap.ByteString("host", req.Host), zap.ByteString("method", req.Method), zap.ByteString("uri", req.Target))
	g.writeAccess(ce, fp, fields, remote, status, n, d, cold, werr)
}

// logAccess2 writes the access log line of an HTTP/2 stream: the same fields, and the
// protocol.
func (g *Gateway) logAccess2(r *http.Request, t reqTrace, remote net.Addr, rev *revision, in *balance.Instance[*backend], status int, n int64, d, cold time.Duration, werr error) {
	g.endTrace(t, in, status, cold, werr)
	ce := g.accessEntry(rev, in)
	if ce == nil {
		return
	}
	fp := g.accessFields()
	fields := append((*fp)[:0], zap.String("host", r.Host), zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.String("proto", "HTTP/2.0"))
	g.writeAccess(ce, fp, fields, remote, status, n, d, cold, werr)
}

// accessEntry is the line to write, nil when the access log is off. The revision's and
// the instance's fields were encoded into their loggers once.
func (g *Gateway) accessEntry(rev *revision, in *balance.Instance[*backend]) *zapcore.CheckedEntry {
	log := g.access
	switch {
	case in != nil && in.Backend.access != nil:
		log = in.Backend.access
	case rev != nil && rev.access != nil:
		log = rev.access
	}
	return log.Check(zap.InfoLevel, "request")
}

func (g *Gateway) accessFields() *[]zap.Field {
	fp, _ := g.fields.Get().(*[]zap.Field)
	if fp == nil {
		fp = new([]zap.Field)
	}
	return fp
}

func (g *Gateway) writeAccess(ce *zapcore.CheckedEntry, fp *[]zap.Field, fields []zap.Field, remote net.Addr, status int, n int64, d, cold time.Duration, werr error) {
	fields = append(fields,
		zap.Int("status", status),
		zap.Int64("bytes", n),
		zap.Duration("duration", d),
		zap.Stringer("remote", remote),
	)
	if cold > 0 {
		fields = append(fields, zap.Duration("cold_start", cold))
	}
	if status == 101 {
		fields = append(fields, zap.Bool("upgrade", true))
	}
	if cut, ok := werr.(timeoutCut); ok {
		fields = append(fields, zap.String("timeout", string(cut))) // it cut the response off
	} else if werr != nil {
		fields = append(fields, zap.NamedError("write_error", werr))
	}
	ce.Write(fields...)
	clear(fields)
	*fp = fields[:0]
	g.fields.Put(fp)
}
