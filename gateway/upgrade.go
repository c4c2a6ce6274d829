package gateway

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// upgrade passes a WebSocket (or any Upgrade) request through: it takes a slot like any
// request (holding while the revision wakes), dials the instance, sends the request head,
// then hijacks the client connection and copies bytes both ways until either side closes.
// The slot is held for the connection's life.
func (g *Gateway) upgrade(x *exchange) {
	ctx, rev := x.ctx, x.rev
	deadline := x.start.Add(rev.timeout())
	x.buf = g.prepareRequest(ctx, true, x.buf)
	if !g.acquire(x, deadline) {
		g.putExchange(x)
		return
	}
	in := x.inst
	up, err := net.DialTimeout("tcp", in.Backend.addr, min(5*time.Second, time.Until(deadline)))
	if err != nil {
		rev.pool.Release(in)
		rev.markDown(in)
		x.inst = nil
		g.fail(x, fasthttp.StatusBadGateway, "", "upstream_error", "rouse: revision "+rev.name+" instance refused the upgrade: "+err.Error()+"\n")
		g.putExchange(x)
		return
	}
	// The request head and anything fasthttp already read of a body go first.
	head := append([]byte(nil), ctx.Request.Header.Header()...)
	if cl := ctx.Request.Header.ContentLength(); cl > 0 && cl <= prefetchBytes {
		head = append(head, ctx.Request.Body()...)
	}
	host, method, uri := string(ctx.Host()), string(ctx.Method()), string(ctx.RequestURI())
	remote := ctx.RemoteAddr().String()
	start, cold := x.start, x.cold
	g.putExchange(x)

	g.hijacked.Add(1) // counted now: the hijack handler runs after this handler returns
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer g.hijacked.Add(-1)
		g.trackHijacked(c, up, true)
		defer g.trackHijacked(c, up, false)
		status, n := g.pipe(c, up, head, deadline)
		rev.pool.Release(in)
		d := g.clk.Now().Sub(start)
		rev.count(status, d)
		if ce := g.access.Check(zap.InfoLevel, "request"); ce != nil {
			ce.Write(zap.String("host", host), zap.String("method", method), zap.String("uri", uri), zap.Int("status", status),
				zap.Int64("bytes", n), zap.Duration("duration", d), zap.String("remote", remote),
				zap.String("namespace", rev.ns), zap.String("revision", rev.name), zap.String("instance", in.Backend.addr),
				zap.Duration("cold_start", cold), zap.Bool("upgrade", true))
		}
	})
}

// pipe relays an upgraded connection and returns the instance's status code and the bytes
// sent to the client.
func (g *Gateway) pipe(client, up net.Conn, head []byte, deadline time.Time) (status int, n int64) {
	defer up.Close()
	_ = up.SetDeadline(deadline)
	if _, err := up.Write(head); err != nil {
		io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return fasthttp.StatusBadGateway, 0
	}
	br := bufio.NewReader(up)
	if line, err := br.Peek(12); err == nil {
		status, _ = strconv.Atoi(string(line[9:12]))
	} else {
		io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return fasthttp.StatusBadGateway, 0
	}
	_ = up.SetDeadline(time.Time{}) // an upgraded connection lives as long as its peers want
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(up, client)
		closeWrite(up)
	}()
	n, _ = io.Copy(client, br)
	closeWrite(client)
	// The instance is done sending; give the client side a moment to finish, then end both.
	t := time.AfterFunc(5*time.Second, func() { client.Close(); up.Close() })
	wg.Wait()
	t.Stop()
	return status, n
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

func (g *Gateway) trackHijacked(c, up net.Conn, add bool) {
	g.hjMu.Lock()
	defer g.hjMu.Unlock()
	if add {
		g.hjConns[c] = struct{}{}
		g.hjConns[up] = struct{}{}
		return
	}
	delete(g.hjConns, c)
	delete(g.hjConns, up)
}

// closeHijacked ends every upgraded connection (drain timeout).
func (g *Gateway) closeHijacked() {
	g.hjMu.Lock()
	defer g.hjMu.Unlock()
	for c := range g.hjConns {
		c.Close()
	}
}
