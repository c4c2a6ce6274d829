package gateway

import (
	"errors"
	"fmt"

	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/upstream"
)

// errClientBody: the client closed its connection before its request body ended.
var errClientBody = errors.New("client closed the connection mid-body")

// streamBufSize is the buffer a body streams through when it does not fit in the
// connection's read buffer.
const streamBufSize = 16 << 10

// reqBody is the request body as it is forwarded: the part read with the head first,
// then (when there is more) streamed from the client, a read at a time. Each read has
// ReadTimeout, so a slow client is cut off by pauses, not by the body's size. A
// chunked body is relayed with its coding, checked byte by byte as it passes.
type reqBody struct {
	c        *conn
	start    int   // the body's offset in c.buf
	buffered int   // the body's bytes in c.buf, sent with the head
	left     int64 // Content-Length bytes still on the client connection
	chunked  bool
	cs       http1.ChunkScanner
	data     int64  // chunk data bytes seen, for MaxBodyBytes
	leftover []byte // bytes read after a streamed body's end: the next request's
}

// fromBuffer takes the body's part already in c.buf.
func (b *reqBody) fromBuffer() error {
	req := &b.c.req
	avail := b.c.w - b.start
	switch req.Body {
	case http1.Length:
		k := min(int64(avail), req.Length)
		b.buffered, b.left = int(k), req.Length-k
	case http1.Chunked:
		b.chunked = true
		n, err := b.scan(b.c.buf[b.start:b.c.w])
		b.buffered = n
		return err
	}
	return nil
}

// complete reports whether the whole body has been read from the client.
func (b *reqBody) complete() bool { return b.left == 0 && (!b.chunked || b.cs.Done()) }

// scan follows chunked framing over p, enforcing MaxBodyBytes on the data.
func (b *reqBody) scan(p []byte) (int, error) {
	used := 0
	for used < len(p) && !b.cs.Done() {
		k, data, err := b.cs.Next(p[used:])
		if err != nil {
			return used, err
		}
		if data {
			b.data += int64(k)
			if max := b.c.g.cfg.MaxBodyBytes; max > 0 && b.data > max {
				return used, http1.ErrBodyTooLarge
			}
		}
		used += k
	}
	return used, nil
}

// stream copies the rest of the body from the client to uc.
func (b *reqBody) stream(uc *upstream.Conn) error {
	c, g := b.c, b.c.g
	bp, _ := g.streamBufs.Get().(*[]byte)
	if bp == nil {
		buf := make([]byte, streamBufSize)
		bp = &buf
	}
	defer g.streamBufs.Put(bp)
	buf := *bp
	for !b.complete() {
		c.setReadDeadline(g.clk.Now().Add(g.cfg.ReadTimeout), true)
		m, err := c.c.Read(buf)
		if m > 0 {
			use := m
			if b.chunked {
				var serr error
				if use, serr = b.scan(buf[:m]); serr != nil {
					return serr
				}
			} else {
				use = int(min(int64(m), b.left))
				b.left -= int64(use)
			}
			if use < m {
				b.leftover = append(b.leftover[:0], buf[use:m]...)
			}
			if _, werr := uc.Write(buf[:use]); werr != nil {
				return fmt.Errorf("sending the request body: %w", werr)
			}
		}
		if err != nil && !b.complete() {
			if isTimeout(err) {
				return http1.ErrReadTimeout
			}
			return errClientBody
		}
	}
	return nil
}
