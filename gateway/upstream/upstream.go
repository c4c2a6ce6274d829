// Package upstream holds the gateway's connections to instances: a pool of kept-alive
// HTTP/1.1 connections per instance, and reading a response head off one by the rules
// of package http1. A connection goes back to the pool only when its last response
// ended exactly where its framing said and nothing followed it, and it is checked again
// (one non-blocking peek) when it is taken: an instance's stray bytes never become the
// next request's response, and a connection the instance closed while idle is replaced
// before a request is written to it.
package upstream

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/rouse-run/rouse/gateway/http1"
)

// BufSize is a connection's read buffer, and so the largest response head taken.
const BufSize = 16 << 10

// MaxIdle: a connection idle longer is closed rather than reused (instances close idle
// keep-alive connections after a few seconds; Node's default is 5 s).
const MaxIdle = 4 * time.Second

// ErrHeadTooLarge: the instance's response head did not fit in BufSize.
var ErrHeadTooLarge = errors.New("response head larger than 16 KiB")

// Conn is one connection to an instance. Buf[R:W] is read but not consumed.
type Conn struct {
	net.Conn
	Buf  []byte
	R, W int
	// Got counts the bytes read since the request was written: 0 means the instance
	// answered nothing, so a request on a reused connection may be tried again.
	Got    int
	Reused bool
	dl     time.Time
}

// Pool is one instance's idle connections, newest last (reused first, so the oldest
// age out).
type Pool struct {
	Addr   string
	mu     sync.Mutex
	idle   []idleConn
	closed bool // the instance left: connections close when their exchange ends
}

type idleConn struct {
	c  *Conn
	at time.Time
}

// Get returns an idle connection that is still good, or dials one. now is the
// request's start.
func (p *Pool) Get(now, deadline time.Time) (*Conn, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		ic := p.idle[n-1]
		p.idle[n-1] = idleConn{}
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if now.Sub(ic.at) < MaxIdle && alive(ic.c.Conn) {
			ic.c.R, ic.c.W, ic.c.Got, ic.c.Reused = 0, 0, 0, true
			return ic.c, nil
		}
		ic.c.Close()
	}
	return Dial(p.Addr, min(5*time.Second, deadline.Sub(now)))
}

// Dial opens a new connection to addr.
func Dial(addr string, timeout time.Duration) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, Buf: make([]byte, BufSize)}, nil
}

// Put returns a connection whose exchange ended cleanly.
func (p *Pool) Put(c *Conn, now time.Time) {
	p.mu.Lock()
	if p.closed || c.R != c.W {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, idleConn{c: c, at: now})
	p.mu.Unlock()
}

// CloseStale closes connections idle too long to reuse (the instance may have closed
// them: their descriptors would linger until the next request otherwise).
func (p *Pool) CloseStale(now time.Time) {
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].at) >= MaxIdle {
		p.idle[i].c.Close()
		i++
	}
	if i > 0 {
		n := copy(p.idle, p.idle[i:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	p.mu.Unlock()
}

// CloseIdle closes every idle connection; later ones close after their exchange (the
// instance left).
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, ic := range idle {
		ic.c.Close()
	}
}

// SetDeadline bounds the exchange by the request's deadline, never earlier and at most
// 1 % of the timeout (≤ 1 s) later: a kept-alive connection then rearms its timer only
// when that slack is used up, not on every request.
func (c *Conn) SetDeadline(deadline time.Time, timeout time.Duration) {
	slack := min(timeout/100, time.Second)
	if !c.dl.Before(deadline) && !c.dl.After(deadline.Add(slack)) {
		return
	}
	c.dl = deadline.Add(slack)
	_ = c.Conn.SetReadDeadline(c.dl)
	_ = c.Conn.SetWriteDeadline(c.dl)
}

// BoundReads sets the read deadline alone, to t (the wait for a response head under
// response_start_timeout, a body's pauses under idle_timeout). The next SetDeadline
// re-arms both.
func (c *Conn) BoundReads(t time.Time) {
	c.dl = time.Time{}
	_ = c.Conn.SetReadDeadline(t)
}

// ReadHead reads the response head to a request with this method, skipping 1xx
// informational responses (101 excepted), and parses it into resp. The head is
// Buf[R:R+resp.HeadLen]; the caller consumes it.
func (c *Conn) ReadHead(method []byte, resp *http1.Response) ([]byte, error) {
	for {
		if i := bytes.Index(c.Buf[c.R:c.W], []byte("\r\n\r\n")); i >= 0 {
			head := c.Buf[c.R : c.R+i+4]
			if err := http1.ParseResponse(head, method, resp); err != nil {
				return nil, err
			}
			if resp.Status < 200 && resp.Status != 101 {
				c.R += resp.HeadLen // 100 Continue, 103 Early Hints: not forwarded
				continue
			}
			return head, nil
		}
		if err := c.Fill(); err != nil {
			if errors.Is(err, ErrHeadTooLarge) || c.Got == 0 {
				return nil, err
			}
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Fill reads more into Buf, first moving the unconsumed bytes to its front when there
// is no room after them.
func (c *Conn) Fill() error {
	if c.R == c.W {
		c.R, c.W = 0, 0
	}
	if c.W == len(c.Buf) {
		if c.R == 0 {
			return ErrHeadTooLarge
		}
		c.W = copy(c.Buf, c.Buf[c.R:c.W])
		c.R = 0
	}
	n, err := c.Conn.Read(c.Buf[c.W:])
	c.W += n
	c.Got += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// Probe asks addr for path on a new connection and reports whether it answered 2xx
// by deadline (the gateway's own readiness probe of a starting instance). now is the
// caller's clock reading.
func Probe(addr, path string, now, deadline time.Time) bool {
	c, err := Dial(addr, deadline.Sub(now))
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.Conn.SetDeadline(deadline)
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: rouse-gateway-probe\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c.Conn, req); err != nil {
		return false
	}
	var resp http1.Response
	if _, err := c.ReadHead([]byte("GET"), &resp); err != nil {
		return false
	}
	return resp.Status >= 200 && resp.Status < 300
}
