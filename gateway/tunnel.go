package gateway

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/upstream"
)

// errUpgradeBody answers an upgrade request whose body is not all in the head's buffer.
var errUpgradeBody = &http1.Error{Status: 400, Reason: "malformed", Msg: "rouse: an upgrade request's body must be small and of known length\n"}

// tunnel passes an Upgrade request (WebSocket, …) through: it takes a slot like any
// request (holding while the revision wakes), sends the head on a new connection, and
// only if the instance answers 101 Switching Protocols copies bytes both ways until
// either side closes or both are idle for IdleTimeout. The slot is held for the
// tunnel's life (a WebSocket is a request in flight, as in Knative). Any other answer is
// relayed as an ordinary response, and the client connection closes after it: bytes the
// client sent for the new protocol must not be read as a request.
func (c *conn) tunnel(rev *revision, start time.Time, headLen int) bool {
	g, req := c.g, &c.req
	if !c.bodyBuffered() {
		c.answer(rev, start, errUpgradeBody, "", 0, true)
		return false
	}
	deadline := start.Add(rev.timeout())
	in, cold, f := g.acquire(rev, start, deadline, nil)
	if f != nil {
		return c.fail(rev, start, cold, *f)
	}
	up, err := upstream.Dial(in.Backend.addr, min(5*time.Second, deadline.Sub(g.clk.Now())))
	if err != nil {
		rev.pool.Release(in)
		rev.markDown(in, "refused a connection")
		return c.fail(rev, start, cold, failure{&http1.Error{Status: 502, Reason: "upstream_error", Msg: "rouse: revision " + rev.name + " instance refused the upgrade: " + err.Error() + "\n"}, ""})
	}
	head := c.buf[c.r : c.r+headLen]
	out := http1.AppendRequestHead(c.out[:0], head, req, c.fwd(), true)
	body := reqBody{c: c, start: c.r + headLen, buffered: int(req.Length)}
	out = append(out, c.buf[body.start:body.start+body.buffered]...)
	c.out = out
	up.SetDeadline(deadline, rev.timeout())
	lim := newLimits(rev, deadline)
	var rhead []byte
	if _, err = up.Write(out); err == nil {
		if lim.on() {
			lim.awaitHead(up, g.clk.Now())
		}
		rhead, err = up.ReadHead(req.Method, &c.resp)
	}
	if err != nil {
		up.Close()
		rev.pool.Release(in)
		return c.fail(rev, start, cold, lim.failure(err))
	}
	if c.resp.Status != 101 {
		req.Close = true
		c.relay(rev, in, up, rhead, &body, start, cold, &lim)
		return false
	}

	// Switched: the 101 head as the instance sent it, with what followed it.
	up.R += c.resp.HeadLen
	out = append(append(c.out[:0], rhead...), up.Buf[up.R:up.W]...)
	c.out = out
	c.consume(&body)
	c.pushWriteDeadline()
	_, werr := c.c.Write(out)
	var n int64
	if werr == nil && c.w > c.r {
		_, werr = up.Write(c.buf[c.r:c.w]) // the client's first bytes of the new protocol
	}
	if werr == nil {
		var idled bool
		if n, idled = c.pipe(up.Conn, lim.idle); idled {
			werr = timeoutCut(reasonIdle) // logged as the reason it closed
		}
	}
	up.Close()
	rev.pool.Release(in)
	d := g.clk.Now().Sub(start)
	rev.count(101, d)
	g.logAccess(req, c.trace, c.remote, rev, in, 101, n, d, cold, werr)
	return false
}

// pipe copies bytes both ways between the client and up until one side closes (the
// other gets a half-close and 5 s to finish) or neither sends for IdleTimeout, or for
// the revision's idle_timeout (revIdle, 0 = none) when that is shorter. It returns the
// bytes sent to the client, and whether idleness ended the tunnel.
func (c *conn) pipe(up net.Conn, revIdle time.Duration) (int64, bool) {
	g := c.g
	idle := g.cfg.IdleTimeout
	if revIdle > 0 && revIdle < idle {
		idle = revIdle
	}
	var last atomic.Int64 // unix nanos of the last byte either way
	var idled atomic.Bool // one way found both idle: the tunnel ends
	last.Store(g.clk.Now().UnixNano())
	// copyIdle copies until EOF, an error, or an idle timeout with the other way idle too.
	copyIdle := func(dst, src net.Conn) int64 {
		buf := make([]byte, 16<<10)
		var n int64
		for {
			_ = src.SetReadDeadline(g.clk.Now().Add(idle))
			m, err := src.Read(buf)
			if m > 0 {
				last.Store(g.clk.Now().UnixNano())
				_ = dst.SetWriteDeadline(g.clk.Now().Add(g.cfg.WriteTimeout))
				if _, werr := dst.Write(buf[:m]); werr != nil {
					return n
				}
				n += int64(m)
			}
			if err != nil {
				if isTimeout(err) && g.clk.Now().Sub(time.Unix(0, last.Load())) < idle && !g.draining.Load() && !idled.Load() {
					continue // this way is idle, the other is not
				}
				if isTimeout(err) && !idled.Swap(true) {
					// Both ways idle: the other way's read, armed up to idle ago, ends now
					// rather than at its own deadline.
					_ = dst.SetReadDeadline(g.clk.Now())
				}
				return n
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyIdle(up, c.c)
		closeWrite(up)
	}()
	n := copyIdle(c.c, up)
	closeWrite(c.c)
	// The instance is done sending; give the client side a moment to finish, then end both.
	t := time.AfterFunc(5*time.Second, func() { c.c.Close(); up.Close() })
	wg.Wait()
	t.Stop()
	return n, idled.Load()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
