package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// The fast path's side toward instances: kept-alive connections per instance, the
// response head (status, framing, hop-by-hop headers) and the relay of the body as it
// arrives, unchanged.

// upConn is a kept-alive connection to an instance.
type upConn struct {
	c    net.Conn
	buf  []byte
	r, w int
	got  int // bytes read for the current exchange
	// the response head, parsed
	status    int
	headLen   int
	cl        int64 // -1: none
	chunked   bool
	closeBody bool // body runs to EOF
	connClose bool
	drop      [][2]int  // header lines of the response head to leave out
	dl        time.Time // the read deadline set on c
}

// setDeadline bounds the exchange by the request's deadline, never earlier and at most
// 1 % of the timeout (≤ 1 s) later: a kept-alive connection then rearms its timer only
// when that slack is used up, not on every request.
func (uc *upConn) setDeadline(deadline time.Time, timeout time.Duration) {
	slack := min(timeout/100, time.Second)
	if !uc.dl.Before(deadline) && !uc.dl.After(deadline.Add(slack)) {
		return
	}
	uc.dl = deadline.Add(slack)
	_ = uc.c.SetReadDeadline(uc.dl)
}

// rawPool holds an instance's idle connections, newest last (reused first, so the
// oldest age out).
type rawPool struct {
	mu     sync.Mutex
	idle   []idleConn
	closed bool // the instance left: connections are closed when their exchange ends
}

type idleConn struct {
	uc *upConn
	at time.Time
}

// maxIdleUp: a connection idle longer is closed rather than reused (instances close idle
// keep-alive connections after a few seconds; Go's default is never, Node's 5 s).
const maxIdleUp = 4 * time.Second

// get returns a kept-alive connection (reused true) or dials one; now is the request's
// start (a clock read per request saved).
func (p *rawPool) get(g *Gateway, addr string, now, deadline time.Time) (*upConn, bool, error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		ic := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = idleConn{}
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(ic.at) < maxIdleUp {
			p.mu.Unlock()
			ic.uc.reset()
			return ic.uc, true, nil
		}
		ic.uc.c.Close()
	}
	p.mu.Unlock()
	c, err := net.DialTimeout("tcp", addr, min(5*time.Second, deadline.Sub(now)))
	if err != nil {
		return nil, false, err
	}
	return &upConn{c: c, buf: make([]byte, 16<<10)}, false, nil
}

func (p *rawPool) put(uc *upConn, now time.Time) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		uc.c.Close()
		return
	}
	p.idle = append(p.idle, idleConn{uc: uc, at: now})
	p.mu.Unlock()
}

// closeStale closes connections idle too long to reuse (the instance may have closed
// them: their descriptors would linger until the next request otherwise).
func (p *rawPool) closeStale(now time.Time) {
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].at) >= maxIdleUp {
		p.idle[i].uc.c.Close()
		i++
	}
	if i > 0 {
		n := copy(p.idle, p.idle[i:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	p.mu.Unlock()
}

// sweepIdle closes stale upstream connections of every routed revision.
func (g *Gateway) sweepIdle() {
	rt := g.routing.Load()
	if rt == nil {
		return
	}
	now := g.clk.Now()
	for _, r := range rt.revs {
		r.mu.Lock()
		for _, in := range r.backends {
			in.Backend.raw.closeStale(now)
		}
		r.mu.Unlock()
	}
}

// closeIdle closes every idle connection (the instance left).
func (p *rawPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, ic := range idle {
		ic.uc.c.Close()
	}
}

func (uc *upConn) reset() {
	uc.r, uc.w, uc.got = 0, 0, 0
}

var errUpstreamProtocol = errors.New("malformed response from the instance")

// roundTrip writes the request and reads the response head into uc.
func (uc *upConn) roundTrip(out, method []byte) error {
	uc.reset()
	if _, err := uc.c.Write(out); err != nil {
		return err
	}
	for {
		if err := uc.readHead(); err != nil {
			return err
		}
		switch {
		case uc.status == 101:
			return errUpstreamProtocol // we did not ask for an upgrade
		case uc.status >= 200:
			return nil
		}
		// 1xx informational: skipped (the general path does the same).
		uc.r += uc.headLen
	}
}

func (uc *upConn) readHead() error {
	for {
		if i := bytes.Index(uc.buf[uc.r:uc.w], crlfcrlf); i >= 0 {
			uc.headLen = i + 4
			return uc.parseHead()
		}
		if uc.w == len(uc.buf) {
			if uc.r == 0 {
				return errors.New("response head larger than 16 KiB")
			}
			uc.w = copy(uc.buf, uc.buf[uc.r:uc.w])
			uc.r = 0
		}
		n, err := uc.c.Read(uc.buf[uc.w:])
		uc.w += n
		uc.got += n
		if err != nil && n == 0 {
			if err == io.EOF && uc.got > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

func (uc *upConn) parseHead() error {
	head := uc.buf[uc.r : uc.r+uc.headLen-2]
	eol := bytes.Index(head, crlf)
	line := head[:eol]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return errUpstreamProtocol
	}
	code, ok := parseLength(line[9:12])
	if !ok || code < 100 || code > 999 || (len(line) > 12 && line[12] != ' ') {
		return errUpstreamProtocol
	}
	uc.status = int(code)
	uc.cl, uc.chunked, uc.closeBody, uc.connClose = -1, false, false, line[7] == '0'
	uc.drop = uc.drop[:0]
	off := eol + 2
	var conn []byte
	clLine := [2]int{-1, -1}
	for off < len(head) {
		start := off
		var name, value []byte
		var ok bool
		line, name, value, off, ok = headerAt(head, off)
		if !ok {
			return errUpstreamProtocol
		}
		drop := false
		switch {
		case hopByHop(name):
			drop = true
			if len(name) == 10 && bytes.EqualFold(name, []byte("Connection")) {
				conn = value
				uc.connClose = tokenListHas(value, []byte("close"))
			}
		case len(name) == 14 && bytes.EqualFold(name, []byte("Content-Length")):
			n, ok := parseLength(value)
			if !ok || (uc.cl >= 0 && uc.cl != n) {
				return errUpstreamProtocol
			}
			uc.cl = n
			clLine = [2]int{uc.r + start, uc.r + start + len(line) + 2}
		case len(name) == 17 && bytes.EqualFold(name, []byte("Transfer-Encoding")):
			// Chunked must be the final coding (RFC 9112 §6.1); the others pass through.
			last := value[bytes.LastIndexByte(value, ',')+1:]
			if uc.chunked || !bytes.EqualFold(trimOWS(last), []byte("chunked")) {
				return errUpstreamProtocol
			}
			uc.chunked = true
		}
		if drop {
			uc.drop = append(uc.drop, [2]int{uc.r + start, uc.r + start + len(line) + 2})
		}
	}
	if uc.chunked {
		uc.cl = -1
		if clLine[0] >= 0 { // both: chunked wins, and the client must not see the length
			uc.drop = append(uc.drop, clLine)
			slices.SortFunc(uc.drop, func(a, b [2]int) int { return a[0] - b[0] })
		}
	} else if uc.cl < 0 {
		uc.closeBody = true
	}
	if len(conn) > 0 {
		// Headers the Connection header names are hop-by-hop too.
		off = bytes.Index(head, crlf) + 2
		for off < len(head) {
			start := off
			var name []byte
			line, name, _, off, _ = headerAt(head, off) // every name was checked above
			if tokenListHas(conn, name) && !bytes.EqualFold(name, []byte("Connection")) {
				uc.drop = append(uc.drop, [2]int{uc.r + start, uc.r + start + len(line) + 2})
			}
		}
		slices.SortFunc(uc.drop, func(a, b [2]int) int { return a[0] - b[0] })
	}
	return nil
}

func tokenListHas(list, tok []byte) bool {
	for len(list) > 0 {
		var t []byte
		t, list, _ = bytes.Cut(list, []byte(","))
		if bytes.EqualFold(trimOWS(t), tok) {
			return true
		}
	}
	return false
}

// relay writes the response to the client: the head without hop-by-hop headers, then the
// body as it arrives. reuse: the upstream connection ended cleanly and can be kept.
func (fc *fastConn) relay(uc *upConn, method []byte) (status int, n int64, werr error, reuse bool) {
	status = uc.status
	noBody := string(method) == "HEAD" || status == 204 || status == 304 || status < 200
	if noBody {
		uc.cl, uc.chunked, uc.closeBody = 0, false, false
	}
	closeClient := fc.req.close || uc.closeBody || fc.g.draining.Load()
	fc.req.close = closeClient
	head := uc.buf[uc.r : uc.r+uc.headLen-2]
	out := append(fc.out[:0], "HTTP/1.1"...) // the version is ours; the rest as it came
	pos := uc.r + len("HTTP/1.1")
	for _, d := range uc.drop {
		if d[0] > pos {
			out = append(out, uc.buf[pos:d[0]]...)
		}
		pos = max(pos, d[1])
	}
	out = append(out, uc.buf[pos:uc.r+len(head)]...)
	if closeClient {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, '\r', '\n')
	uc.r += uc.headLen

	// Body bytes already read go out with the head: one write for a small response.
	var cs chunkScanner
	remaining := uc.cl
	done := func(avail []byte) (take int, end bool) {
		switch {
		case uc.chunked:
			return cs.scan(avail)
		case uc.closeBody:
			return len(avail), false
		default:
			t := int(min(int64(len(avail)), remaining))
			remaining -= int64(t)
			return t, remaining == 0
		}
	}
	fin := !uc.chunked && !uc.closeBody && remaining == 0
	if !fin && uc.w > uc.r {
		take, end := done(uc.buf[uc.r:uc.w])
		if take < 0 {
			return 502, 0, errUpstreamProtocol, false
		}
		out = append(out, uc.buf[uc.r:uc.r+take]...)
		n += int64(take)
		uc.r += take
		fin = end
	}
	fc.out = out
	fc.pushWriteDeadline()
	if _, werr = fc.c.Write(out); werr != nil {
		return status, n, werr, false
	}
	for !fin {
		uc.r, uc.w = 0, 0
		m, err := uc.c.Read(uc.buf)
		if m > 0 {
			take, end := done(uc.buf[:m])
			if take < 0 {
				return status, n, errUpstreamProtocol, false
			}
			fc.pushWriteDeadline()
			if _, werr = fc.c.Write(uc.buf[:take]); werr != nil {
				return status, n, werr, false
			}
			n += int64(take)
			uc.r, uc.w = take, m
			fin = end
		}
		if err != nil && !fin {
			if err == io.EOF && uc.closeBody {
				return status, n, nil, false
			}
			return status, n, err, false // the client sees a cut-off body, then a close
		}
	}
	return status, n, nil, !uc.connClose && !uc.closeBody && uc.r == uc.w
}

// chunkScanner follows chunked framing (RFC 9112 §7.1) across reads to find where the
// message ends; the bytes themselves are relayed unchanged.
type chunkScanner struct {
	state  int
	size   int64
	digits int
	lineN  int
}

const (
	csSize = iota
	csExt
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailerStart
	csTrailer
	csTrailerLF
	csEndLF
)

// scan consumes b and returns how many bytes belong to the message and whether it ended;
// -1 on malformed framing.
func (s *chunkScanner) scan(b []byte) (int, bool) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch s.state {
		case csSize:
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
				if s.digits++; s.digits > 15 {
					return -1, false
				}
				s.size = s.size<<4 | int64(unhex(c))
			case c == ';' || c == ' ' || c == '\t':
				if s.digits == 0 {
					return -1, false
				}
				s.state = csExt
			case c == '\r':
				if s.digits == 0 {
					return -1, false
				}
				s.state = csSizeLF
			default:
				return -1, false
			}
		case csExt:
			if s.lineN++; s.lineN > 4096 {
				return -1, false
			}
			if c == '\r' {
				s.state = csSizeLF
			}
		case csSizeLF:
			if c != '\n' {
				return -1, false
			}
			s.digits, s.lineN = 0, 0
			if s.size == 0 {
				s.state = csTrailerStart
			} else {
				s.state = csData
			}
		case csData:
			k := int(min(int64(len(b)-i), s.size))
			s.size -= int64(k)
			i += k - 1
			if s.size == 0 {
				s.state = csDataCR
			}
		case csDataCR:
			if c != '\r' {
				return -1, false
			}
			s.state = csDataLF
		case csDataLF:
			if c != '\n' {
				return -1, false
			}
			s.state = csSize
		case csTrailerStart:
			if c == '\r' {
				s.state = csEndLF
			} else {
				s.state = csTrailer
			}
		case csTrailer:
			if s.lineN++; s.lineN > 16<<10 {
				return -1, false
			}
			if c == '\r' {
				s.state = csTrailerLF
			}
		case csTrailerLF:
			if c != '\n' {
				return -1, false
			}
			s.state = csTrailerStart
		case csEndLF:
			if c != '\n' {
				return -1, false
			}
			return i + 1, true
		}
	}
	return len(b), false
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
