package gateway

import (
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/http1"
)

// logAccess writes the request's access log line.
func (g *Gateway) logAccess(req *http1.Request, remote net.Addr, rev *revision, in *balance.Instance[*backend], status int, n int64, d, cold time.Duration, werr error) {
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
		zap.ByteString("host", req.Host),
		zap.ByteString("method", req.Method),
		zap.ByteString("uri", req.Target),
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
	if werr != nil {
		fields = append(fields, zap.NamedError("write_error", werr))
	}
	ce.Write(fields...)
	*fp = fields
}
