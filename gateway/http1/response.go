package http1

import (
	"bytes"
	"slices"
	"strconv"
)

// Response is a parsed response head; spans are relative to the head's first byte.
type Response struct {
	Status  int
	Minor   uint8
	HeadLen int

	Body   Body
	Length int64 // with Body == Length

	// Close: the instance closes the connection after this response, or it must not
	// be reused (its framing cannot be trusted to have ended where it says).
	Close bool
	// Drop are the header lines not forwarded: hop-by-hop ones, those the Connection
	// header names, and Content-Length beside chunked.
	Drop []Span

	named [][]byte
	cls   []Span
	tes   []Span
}

// ParseResponse parses head (status line through the blank line) of the response to a
// request with the given method, into resp (its slices reused). Any error is ErrUpstream.
func ParseResponse(head, method []byte, resp *Response) error {
	*resp = Response{Drop: resp.Drop[:0], named: resp.named[:0], cls: resp.cls[:0], tes: resp.tes[:0], HeadLen: len(head)}
	fields, eol, ok := startLine(head)
	if !ok {
		return ErrUpstream
	}
	line := fields[:eol-1]
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') || line[8] != ' ' {
		return ErrUpstream
	}
	resp.Minor = line[7] - '0'
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return ErrUpstream
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || (len(line) > 12 && line[12] != ' ') || !validValue(line[12:]) {
		return ErrUpstream
	}
	resp.Status = code

	var (
		conn    = connTokens{named: resp.named}
		te      []byte
		tes     int
		n       int64
		cls     int
		clText  []byte
		clValid = true
	)
	for off := eol + 1; off < len(fields); {
		start := off
		line, name, value, _, next, ok := field(fields, off)
		off = next
		if !ok {
			return ErrUpstream
		}
		span := Span{int32(start), int32(start + len(line))}
		switch h := classify(name); {
		case h == hContentLength:
			// Repeats must be the same text (net/http's rule: "5" and "05" differ).
			v, ok := parseLength(value)
			if cls++; !ok || (cls > 1 && !bytes.Equal(value, clText)) {
				clValid = false
			}
			n, clText = v, value
			resp.cls = append(resp.cls, span)
		case h == hTransferEncoding:
			tes++
			te = value // the final coding is in the last line
			resp.tes = append(resp.tes, span)
		case h == hConnection || h == hProxyConnection:
			if !conn.add(value) {
				return ErrUpstream
			}
			resp.Drop = append(resp.Drop, span)
		case h.hopByHop():
			if code != 101 || h != hUpgrade {
				resp.Drop = append(resp.Drop, span)
			}
		}
	}
	if resp.Minor == 0 {
		resp.Close = !conn.keepAlive || conn.close
	} else {
		resp.Close = conn.close
	}
	resp.named = conn.named
	// Only one coding is taken, chunked, on one line, as net/http's client does: a relayed
	// head with any other Transfer-Encoding is one the clients behind would refuse, and
	// an HTTP/1.0 client could not be given the body decoded.
	chunked := tes == 1 && equalFold(te, "chunked")
	switch {
	case tes > 0 && (resp.Minor == 0 || !chunked):
		return ErrUpstream // RFC 9112 §6.1: faulty framing in 1.0; an unsupported coding
	case !clValid:
		return ErrUpstream // RFC 9112 §6.3: an invalid or conflicting length is unrecoverable
	}
	if tes > 0 {
		resp.Drop = append(resp.Drop, resp.cls...) // chunked wins; the client must not see both
	}
	switch {
	case string(method) == "HEAD" || code < 200 || code == 204 || code == 304:
		resp.Body = NoBody
		// A body announced where none may follow (HEAD, 204, 304): if the instance sends
		// one anyway, it would be read as the next response, so the connection is not
		// reused. HEAD of a non-empty resource pays a new connection for this.
		if tes > 0 || n > 0 {
			resp.Close = true
		}
	case chunked:
		resp.Body = Chunked
	case cls > 0:
		resp.Body, resp.Length = Length, n
		if n == 0 {
			resp.Body = NoBody
		}
	default:
		resp.Body, resp.Close = UntilClose, true
	}
	if len(conn.named) > 0 {
		for off := eol + 1; off < len(fields); {
			start := off
			line, name, _, _, next, _ := field(fields, off) // every line was checked above
			off = next
			if h := classify(name); !h.framing() && h != hConnection && (code != 101 || h != hUpgrade) && conn.names(name) {
				resp.Drop = append(resp.Drop, Span{int32(start), int32(start + len(line))})
			}
		}
	}
	sortSpans(resp.Drop)
	return nil
}

// Dechunk drops the Transfer-Encoding lines of a chunked response, for a client that
// gets its data without the coding (an HTTP/1.0 client: the body then ends with the
// connection).
func (resp *Response) Dechunk() {
	resp.Drop = append(resp.Drop, resp.tes...)
	sortSpans(resp.Drop)
}

func sortSpans(s []Span) {
	slices.SortFunc(s, func(a, b Span) int { return int(a.Start - b.Start) })
}

// AppendResponseHead appends the response head to forward to a client: the status line
// as HTTP/1.1, the lines not dropped, extra (whole lines with CRLF), then the
// connection's own header and the blank line. keepAlive10 answers an HTTP/1.0 client
// that asked to keep the connection.
func AppendResponseHead(dst, head []byte, resp *Response, close, keepAlive10 bool, extra ...[]byte) []byte {
	dst = append(dst, "HTTP/1.1"...)
	pos := len("HTTP/1.1")
	end := len(head) - 2
	for _, d := range resp.Drop {
		if int(d.Start) > pos {
			dst = append(dst, head[pos:d.Start]...)
		}
		pos = max(pos, int(d.End)+2)
	}
	dst = append(dst, head[pos:end]...)
	for _, e := range extra {
		dst = append(dst, e...)
	}
	switch {
	case close:
		dst = append(dst, "Connection: close\r\n"...)
	case keepAlive10:
		dst = append(dst, "Connection: keep-alive\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// Forwarded is what the gateway states about a request in X-Forwarded-*.
type Forwarded struct {
	ClientIP []byte // the peer's address, appended to X-Forwarded-For
	Proto    string // "http" or "https"
	// Trust keeps the client's X-Forwarded-Proto and -Host (a trusted proxy is in front).
	Trust bool
	// Traceparent, when not nil, replaces every traceparent field of the request with
	// this value (the gateway's own span, with tracing on); nil forwards them as they came.
	Traceparent []byte
}

// isTraceparent reports whether a header line (name: value) or a field name is W3C's
// traceparent, ASCII case-insensitively.
func isTraceparent(line []byte) bool {
	const n = len("traceparent")
	return len(line) >= n && (len(line) == n || line[n] == ':') && equalFold(line[:n], "traceparent")
}

// AppendRequestHead appends the request head to forward to an instance: an origin-form
// request line in HTTP/1.1, Host, the kept lines, X-Forwarded-* (every client
// X-Forwarded-For value joined in order, then the client's address: RFC 7239's and Go's
// and nginx's rule), the upgrade headers if upgrade, then the blank line.
func AppendRequestHead(dst, head []byte, req *Request, fwd Forwarded, upgrade bool) []byte {
	dst = append(dst, req.Method...)
	dst = append(dst, ' ')
	if len(req.Path) == 0 || req.Path[0] == '?' {
		dst = append(dst, '/')
	}
	dst = append(dst, req.Path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, req.Host...)
	dst = append(dst, "\r\n"...)
	for _, s := range req.Keep {
		if fwd.Traceparent != nil && isTraceparent(head[s.Start:s.End]) {
			continue
		}
		dst = append(append(dst, head[s.Start:s.End]...), "\r\n"...)
	}
	if fwd.Traceparent != nil {
		dst = append(append(append(dst, "Traceparent: "...), fwd.Traceparent...), "\r\n"...)
	}
	dst = append(dst, "X-Forwarded-For: "...)
	for _, s := range req.XFF {
		dst = append(append(dst, head[s.Start:s.End]...), ", "...)
	}
	dst = append(dst, fwd.ClientIP...)
	dst = append(dst, "\r\nX-Forwarded-Proto: "...)
	if fwd.Trust && len(req.XFP) > 0 {
		dst = append(dst, req.XFP...)
	} else {
		dst = append(dst, fwd.Proto...)
	}
	dst = append(dst, "\r\nX-Forwarded-Host: "...)
	if fwd.Trust && len(req.XFH) > 0 {
		dst = append(dst, req.XFH...)
	} else {
		dst = append(dst, req.Host...)
	}
	dst = append(dst, "\r\n"...)
	if upgrade {
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: "...)
		dst = append(append(dst, req.Upgrade...), "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// AppendMillis appends d as "<n>ms" (the cold-start header's value).
func AppendMillis(b []byte, ms int64) []byte {
	return append(strconv.AppendInt(b, ms, 10), "ms"...)
}

// Fields calls fn with the name and value of each header line of head that is forwarded
// (not in Drop), in order: a response relayed to a client that does not speak HTTP/1.1
// (HTTP/2) gets these as its fields.
func (resp *Response) Fields(head []byte, fn func(name, value []byte)) {
	fields, eol, ok := startLine(head)
	if !ok {
		return
	}
	d := 0
	for off := eol + 1; off < len(fields); {
		start := off
		_, name, value, _, next, ok := field(fields, off)
		off = next
		if !ok {
			return
		}
		for d < len(resp.Drop) && int(resp.Drop[d].Start) < start {
			d++
		}
		if d < len(resp.Drop) && int(resp.Drop[d].Start) == start {
			continue
		}
		fn(name, value)
	}
}
