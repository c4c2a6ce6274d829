package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/rouse-run/rouse/gateway/http1"
)

// An HTTP/1.1 request for an h2c revision: the gateway translates it to an HTTP/2
// request and the answer back to HTTP/1.1, so a curl without --http2 reaches a service
// that only speaks h2c, as in Knative.

var errUpgradeH2C = &http1.Error{Status: 501, Reason: "upgrade_to_h2c", Msg: "rouse: this revision speaks h2c; an HTTP/1.1 upgrade (WebSocket) cannot be forwarded to it\n"}

// toH2C serves the request from an h2c instance of rev and reports whether the
// connection can carry another.
func (c *conn) toH2C(rev *revision, start time.Time, headLen int) bool {
	g, req := c.g, &c.req
	if req.Upgrade != nil {
		return c.fail(rev, start, 0, failure{errUpgradeH2C, ""})
	}
	target := req.Path
	if len(target) == 0 || target[0] == '?' {
		target = append([]byte("/"), target...)
	}
	u, err := url.ParseRequestURI(string(target))
	if err != nil {
		c.answer(rev, start, http1.ErrMalformed, "", 0, true)
		return false
	}
	deadline := start.Add(rev.timeout())
	in, cold, ok, keep := c.slot(rev, start, deadline)
	if !ok {
		return keep
	}
	head := c.buf[c.r : c.r+headLen]
	hdr := make(http.Header, len(req.Keep)+3)
	for _, sp := range req.Keep {
		name, value, _ := bytes.Cut(head[sp.Start:sp.End], []byte(":"))
		k := http.CanonicalHeaderKey(string(name))
		if k == "Content-Length" || k == "Transfer-Encoding" {
			continue // the framing is HTTP/2's own
		}
		hdr[k] = append(hdr[k], string(bytes.Trim(value, " \t")))
	}
	for _, sp := range req.XFF {
		hdr.Add("X-Forwarded-For", string(head[sp.Start:sp.End]))
	}
	if len(req.XFP) > 0 {
		hdr.Set("X-Forwarded-Proto", string(req.XFP))
	}
	if len(req.XFH) > 0 {
		hdr.Set("X-Forwarded-Host", string(req.XFH))
	}
	fwd := c.fwd()
	forwardedFields(hdr, fwd, string(req.Host))

	body := &h1Body{c: c, start: c.r + headLen, chunked: req.Body == http1.Chunked, left: req.Length}
	inBuffer := c.bodyBuffered()
	length := req.Length
	switch req.Body {
	case http1.NoBody:
		length = 0
	case http1.Chunked:
		length = -1
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ctx, wd := newWatchdog(ctx, g, rev, length != 0 && !inBuffer)
	defer wd.stop()
	body.wd = wd
	resp, in, cold, f := g.roundTripH2C(ctx, rev, in, cold, start, deadline, func(addr string) *http.Request {
		out := *u
		out.Scheme, out.Host = "http", addr
		hr := (&http.Request{Method: string(req.Method), URL: &out, Host: string(req.Host), Header: hdr.Clone(),
			Proto: "HTTP/2.0", ProtoMajor: 2, ContentLength: length, Body: http.NoBody}).WithContext(ctx)
		if length != 0 {
			hr.Body = body
		}
		return hr
	}, func() bool { return !body.read })
	if f != nil {
		if body.err != nil {
			return c.answerBodyError(rev, start, cold, body.err)
		}
		return c.fail(rev, start, cold, *f) && inBuffer
	}
	defer resp.Body.Close()
	wd.headers()
	var rb io.Reader = resp.Body
	if wd != nil && wd.idle > 0 {
		rb = touchReader{resp.Body, wd}
	}

	noBody := string(req.Method) == "HEAD" || resp.StatusCode < 200 || resp.StatusCode == 204 || resp.StatusCode == 304
	chunked := !noBody && (resp.ContentLength < 0 || len(resp.Trailer) > 0) && req.Minor == 1
	untilClose := !noBody && !chunked && resp.ContentLength < 0
	closeClient := req.Close || g.draining.Load() || untilClose || !inBuffer
	out := append(c.out[:0], "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(resp.StatusCode), 10)
	out = append(append(out, ' '), http.StatusText(resp.StatusCode)...)
	out = append(out, "\r\n"...)
	for k, vs := range resp.Header {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Trailer", "Upgrade":
			continue
		}
		for _, v := range vs {
			out = append(append(append(append(out, k...), ": "...), v...), "\r\n"...)
		}
	}
	if cold > 0 {
		out = coldStartLine(out, cold)
	}
	switch {
	case chunked:
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	case resp.ContentLength >= 0 && (!noBody || string(req.Method) == "HEAD"):
		out = strconv.AppendInt(append(out, "Content-Length: "...), resp.ContentLength, 10)
		out = append(out, "\r\n"...)
	}
	switch {
	case closeClient:
		out = append(out, "Connection: close\r\n"...)
	case req.Minor == 0 && req.KeepAlive10:
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, "\r\n"...)
	c.out = out
	c.pushWriteDeadline()
	_, werr := c.c.Write(out)
	var n int64
	var rerr error
	if werr == nil && !noBody {
		var w io.Writer = c
		if chunked {
			w = &chunkWriter{c: c}
		}
		n, werr, rerr = copyFlush(w, rb, true, g)
		if werr == nil && rerr == nil && chunked {
			t := append(c.out[:0], "0\r\n"...)
			for k, vs := range resp.Trailer {
				for _, v := range vs {
					t = append(append(append(append(t, k...), ": "...), v...), "\r\n"...)
				}
			}
			t = append(t, "\r\n"...)
			c.out = t
			c.pushWriteDeadline()
			_, werr = c.c.Write(t)
		}
	}
	rev.pool.Release(in)
	end := g.clk.Now()
	c.idleAt = end
	d := end.Sub(start)
	rev.count(resp.StatusCode, d)
	logged := werr
	if rerr != nil && werr == nil {
		logged = cutByContext(ctx, deadline, g)
	}
	g.logAccess(req, c.trace, c.remote, rev, in, resp.StatusCode, n, d, cold, logged)
	if werr != nil || rerr != nil || closeClient {
		return false
	}
	c.r += headLen + int(length)
	return true
}

// Write sends p to the client (copyFlush's writer for a body of known length).
func (c *conn) Write(p []byte) (int, error) {
	c.pushWriteDeadline()
	return c.c.Write(p)
}

// chunkWriter sends each write to the client as one chunk.
type chunkWriter struct{ c *conn }

func (w *chunkWriter) Write(p []byte) (int, error) {
	var sz [20]byte
	line := append(strconv.AppendInt(sz[:0], int64(len(p)), 16), '\r', '\n')
	if _, err := w.c.Write(line); err != nil {
		return 0, err
	}
	n, err := w.c.Write(p)
	if err == nil {
		_, err = w.c.Write([]byte("\r\n"))
	}
	return n, err
}

// h1Body is an HTTP/1.1 request body as an HTTP/2 request's: its data, without the
// chunked coding, read first from what came with the head and then from the client
// connection, each read under ReadTimeout. read: any of it was taken.
type h1Body struct {
	c       *conn
	start   int   // the body's offset in c.buf
	left    int64 // Content-Length bytes not yet taken
	chunked bool
	cs      http1.ChunkScanner
	raw     []byte // chunked bytes read but not yet scanned
	scratch []byte
	data    int64
	read    bool
	err     error     // a client-side failure, for the answer
	wd      *watchdog // nil: none
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.read = true
	n, err := b.next(p)
	if n > 0 {
		b.wd.touch()
	}
	if err == io.EOF {
		b.wd.bodyEnd()
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *h1Body) next(p []byte) (int, error) {
	c, g := b.c, b.c.g
	if !b.chunked {
		if b.left == 0 {
			return 0, io.EOF
		}
		if avail := c.w - b.start; avail > 0 {
			n := copy(p[:min(int64(len(p)), b.left)], c.buf[b.start:c.w])
			b.start += n
			b.left -= int64(n)
			return n, nil
		}
		c.setReadDeadline(g.clk.Now().Add(g.cfg.ReadTimeout), true)
		n, err := c.c.Read(p[:min(int64(len(p)), b.left)])
		b.left -= int64(n)
		if err != nil && b.left > 0 {
			if isTimeout(err) {
				return n, http1.ErrReadTimeout
			}
			return n, errClientBody
		}
		return n, nil
	}
	for {
		if b.cs.Done() {
			return 0, io.EOF
		}
		if len(b.raw) == 0 {
			if avail := c.w - b.start; avail > 0 {
				b.raw = c.buf[b.start:c.w]
				b.start = c.w
			} else {
				if b.scratch == nil {
					b.scratch = make([]byte, streamBufSize)
				}
				c.setReadDeadline(g.clk.Now().Add(g.cfg.ReadTimeout), true)
				n, err := c.c.Read(b.scratch)
				b.raw = b.scratch[:n]
				if n == 0 && err != nil {
					if isTimeout(err) {
						return 0, http1.ErrReadTimeout
					}
					return 0, errClientBody
				}
			}
		}
		k, data, err := b.cs.Next(b.raw[:min(len(b.raw), len(p))]) // data taken is data given
		if err != nil {
			return 0, http1.ErrBadChunk
		}
		if !data {
			b.raw = b.raw[k:]
			continue
		}
		copy(p, b.raw[:k])
		b.raw = b.raw[k:]
		if b.data += int64(k); g.cfg.MaxBodyBytes > 0 && b.data > g.cfg.MaxBodyBytes {
			return 0, http1.ErrBodyTooLarge
		}
		return k, nil
	}
}

func (b *h1Body) Close() error { return nil }
