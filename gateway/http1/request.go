package http1

import (
	"bytes"
	"net/netip"
)

// Body is how a message's body is framed (RFC 9112 §6.3).
type Body uint8

const (
	NoBody     Body = iota
	Length          // Content-Length bytes
	Chunked         // the chunked coding, ending with its last chunk and trailers
	UntilClose      // a response read until the connection closes
)

// Request is a parsed request head. Slices point into the head given to ParseRequest;
// spans are relative to its first byte.
type Request struct {
	Method []byte
	Target []byte // the request-target as sent
	// Path is the origin-form target to forward: Target itself, or an absolute-form
	// target's path and query ("" means "/").
	Path []byte
	// Host is the authority the request is for and is forwarded with: an absolute-form
	// target's authority (RFC 9112 §3.2.2: the Host header is then replaced), else the
	// Host header.
	Host    []byte
	Minor   uint8 // HTTP/1.Minor
	HeadLen int   // the head's length, blank line included

	Body   Body
	Length int64 // with Body == Length

	// Close: the connection closes after this exchange (Connection: close, or HTTP/1.0
	// without keep-alive). KeepAlive10: an HTTP/1.0 client asked to keep it open.
	Close, KeepAlive10 bool
	// Expect100: the client waits for 100 Continue before sending the body. The gateway
	// answers it itself when it is ready for the body; Expect is not forwarded.
	Expect100 bool
	// Upgrade is the Upgrade header's value when the Connection header asks for an
	// upgrade (h2c excepted: that upgrade is never forwarded).
	Upgrade []byte
	// H2C: the request asks to upgrade the connection to HTTP/2 (RFC 7540 §3.2: Upgrade
	// lists h2c, Connection names Upgrade and HTTP2-Settings, exactly one HTTP2-Settings
	// line). HTTP2Settings is that line's value (base64url SETTINGS payload).
	H2C           bool
	HTTP2Settings []byte

	// Keep are the header lines forwarded as they came: all but Host, hop-by-hop
	// headers, the headers Connection names, Expect and X-Forwarded-*.
	Keep []Span
	// XFF are the values of every X-Forwarded-For line, in order; XFH and XFP the first
	// X-Forwarded-Host and -Proto values.
	XFF      []Span
	XFH, XFP []byte

	named   [][]byte // the header names Connection lists
	absHost []byte   // an absolute-form target's authority
}

// ParseRequest parses head (a request line and header lines through the blank line:
// head ends in "\r\n\r\n") into req, reusing req's slices. A nil error means the head is
// well-formed and its framing unambiguous; otherwise the *Error says how to answer.
func ParseRequest(head []byte, req *Request) error {
	*req = Request{Keep: req.Keep[:0], XFF: req.XFF[:0], named: req.named[:0], HeadLen: len(head)}
	fields, eol, ok := startLine(head)
	if !ok {
		return ErrMalformed
	}
	if err := req.requestLine(fields[:eol-1]); err != nil {
		return err
	}
	var (
		conn                 = connTokens{named: req.named}
		hosts, cls, tes, xes int
		te                   []byte
		upgrade              []byte
		settings             []byte
		settingsLines        int
	)
	for off := eol + 1; off < len(fields); {
		start := off
		line, name, value, vstart, next, ok := field(fields, off)
		off = next
		if !ok {
			return ErrMalformed
		}
		span := Span{int32(start), int32(start + len(line))}
		switch h := classify(name); h {
		case hHost:
			if hosts++; hosts > 1 || !ValidHost(value) {
				return ErrBadHost
			}
			if req.Host == nil {
				req.Host = value
			}
		case hContentLength:
			n, ok := parseLength(value)
			if cls++; !ok || cls > 1 {
				return ErrBadLength
			}
			req.Body, req.Length = Length, n
			req.Keep = append(req.Keep, span)
		case hTransferEncoding:
			tes++
			te = value // the final coding is in the last line
			req.Keep = append(req.Keep, span)
		case hConnection, hProxyConnection:
			if !conn.add(value) {
				return ErrMalformed
			}
		case hUpgrade:
			upgrade = value
		case hExpect:
			if !equalFold(value, "100-continue") {
				return ErrExpectation
			}
			xes++
		case hXForwardedFor:
			if len(value) > 0 {
				vs := int32(vstart)
				req.XFF = append(req.XFF, Span{vs, vs + int32(len(value))})
			}
		case hXForwardedHost:
			if req.XFH == nil {
				req.XFH = value
			}
		case hXForwardedProto:
			if req.XFP == nil {
				req.XFP = value
			}
		case hTrailer:
			// Go's net/http refuses these as trailer fields; a next hop that honoured one
			// would reframe the message after its body.
			if listHas(value, "content-length") || listHas(value, "transfer-encoding") || listHas(value, "trailer") {
				return ErrMalformed
			}
		case hHTTP2Settings:
			settings = value // never forwarded: it is for this hop's upgrade
			settingsLines++
		default:
			if !h.hopByHop() {
				req.Keep = append(req.Keep, span)
			}
		}
	}
	if hosts == 0 {
		return ErrBadHost // RFC 9112 §3.2: a request without Host is answered 400
	}
	if len(req.Host) == 0 {
		return ErrBadHost
	}
	if req.absHost != nil {
		req.Host = req.absHost
	}
	if tes > 0 {
		switch {
		case req.Minor == 0:
			return ErrBadFraming // RFC 9112 §6.1: faulty framing in HTTP/1.0
		case cls > 0:
			return ErrBadFraming // RFC 9112 §6.3: both is smuggling
		case !equalFold(trimOWS(te[bytes.LastIndexByte(te, ',')+1:]), "chunked"):
			return ErrNotChunked // RFC 9112 §6.3: the length cannot be known
		case tes > 1 || !equalFold(te, "chunked"):
			return ErrCoding // chunked after another coding: not decoded here
		}
		req.Body, req.Length = Chunked, 0
	}
	if req.Body == Length && req.Length == 0 {
		req.Body = NoBody
	}
	if req.Minor == 0 {
		req.KeepAlive10 = conn.keepAlive && !conn.close
		req.Close = !req.KeepAlive10
		xes = 0 // RFC 9110 §10.1.1: ignored in HTTP/1.0
	} else {
		req.Close = conn.close
	}
	req.Expect100 = xes > 0 && req.Body != NoBody
	if conn.upgrade && len(upgrade) > 0 {
		if !listHas(upgrade, "h2c") {
			req.Upgrade = upgrade
		} else if settingsLines == 1 && conn.names([]byte("HTTP2-Settings")) && req.Minor == 1 {
			req.H2C, req.HTTP2Settings = true, settings
		}
	}
	req.named = conn.named
	if len(conn.named) > 0 {
		req.Keep = dropNamed(fields, req.Keep, &conn)
	}
	return nil
}

// KeptValue is the value of the first kept line named name (ASCII case-insensitive),
// nil without one: a header the gateway acts on besides forwarding it (Rouse-Tag). head
// is the one given to ParseRequest.
func (req *Request) KeptValue(head []byte, name string) []byte {
	n := len(name)
	for _, s := range req.Keep {
		line := head[s.Start:s.End]
		if len(line) > n && line[n] == ':' && equalFold(line[:n], name) {
			return trimOWS(line[n+1:])
		}
	}
	return nil
}

// FirstValue is the value of the first field line of head named name (ASCII
// case-insensitive), forwarded or not, nil without one: what net/http's Header.Get gives
// a handler (the gateway's tracing reads the client's traceparent with it, whether or not
// Connection names it). head is one ParseRequest accepted.
func FirstValue(head []byte, name string) []byte {
	fields, eol, ok := startLine(head)
	if !ok {
		return nil
	}
	for off := eol + 1; off < len(fields); {
		_, n, value, _, next, ok := field(fields, off)
		if !ok {
			return nil
		}
		if len(n) == len(name) && equalFold(n, name) {
			return value
		}
		off = next
	}
	return nil
}

// dropNamed removes from keep the lines whose names a Connection header lists, framing
// headers excepted.
func dropNamed(head []byte, keep []Span, conn *connTokens) []Span {
	out := keep[:0]
	for _, s := range keep {
		line := head[s.Start:s.End]
		name, _, _ := bytes.Cut(line, []byte(":"))
		if !classify(name).framing() && conn.names(name) {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (req *Request) requestLine(line []byte) error {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !IsToken(line[:sp]) {
		return ErrMalformed
	}
	req.Method = line[:sp]
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return ErrMalformed
	}
	req.Target, rest = rest[:sp], rest[sp+1:]
	switch {
	case len(rest) == 8 && bytes.HasPrefix(rest, []byte("HTTP/1.")) && (rest[7] == '0' || rest[7] == '1'):
		req.Minor = rest[7] - '0'
	case len(rest) == 8 && bytes.HasPrefix(rest, []byte("HTTP/")) && rest[5] >= '0' && rest[5] <= '9' && rest[6] == '.' && rest[7] >= '0' && rest[7] <= '9':
		return ErrVersion
	default:
		return ErrMalformed
	}
	for _, c := range req.Target {
		if c <= ' ' || c == 0x7f {
			return ErrMalformed
		}
	}
	if string(req.Method) == "CONNECT" {
		return ErrMethod
	}
	t := req.Target
	switch {
	case t[0] == '/':
		req.Path = t
	case len(t) == 1 && t[0] == '*':
		if string(req.Method) != "OPTIONS" {
			return ErrMalformed
		}
		req.Path = t
	default:
		// absolute-form: http(s)://authority[path]
		var rest []byte
		switch {
		case len(t) > 7 && equalFold(t[:7], "http://"):
			rest = t[7:]
		case len(t) > 8 && equalFold(t[:8], "https://"):
			rest = t[8:]
		default:
			return ErrMalformed
		}
		end := bytes.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		// No escapes in the authority: net/url would route on the decoded name.
		if !ValidHost(rest[:end]) || bytes.IndexByte(rest[:end], '%') >= 0 {
			return ErrBadHost
		}
		req.absHost = rest[:end]
		req.Path = rest[end:]
	}
	if !validEscapes(req.Path) {
		return ErrMalformed
	}
	return nil
}

// validEscapes reports whether every '%' in the path (before any '?') starts a
// two-hex-digit escape, as net/url requires of a request path.
func validEscapes(target []byte) bool {
	path, _, _ := bytes.Cut(target, []byte("?"))
	for i := 0; i < len(path); i++ {
		if path[i] == '%' {
			if i+2 >= len(path) || !ishex(path[i+1]) || !ishex(path[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// ValidHost reports whether an authority is one the gateway routes: a non-empty
// reg-name, IPv4 or bracketed IPv6 literal with an optional port, and no userinfo. It
// takes the bytes Go's net/http accepts in a Host (httpguts.ValidHostHeader) less '@'.
// A port, if any, is digits only.
func ValidHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		if !hostByte[c] {
			return false
		}
	}
	// An IPv6 literal is bracketed ("[::1]:80"): anywhere else at most one colon, before
	// the port (net/url refuses "::0" as a host).
	port := h
	if h[0] == '[' {
		i := bytes.IndexByte(h, ']')
		if i < 0 || bytes.IndexByte(h[i+1:], '[') >= 0 || bytes.IndexByte(h[i+1:], ']') >= 0 {
			return false
		}
		if ip, err := netip.ParseAddr(string(h[1:i])); err != nil || !ip.Is6() || ip.Zone() != "" {
			return false // net/url accepts only an IPv6 address in brackets
		}
		port = h[i+1:]
		if len(port) > 0 && port[0] != ':' {
			return false
		}
	} else if bytes.IndexByte(h, '[') >= 0 || bytes.IndexByte(h, ']') >= 0 || bytes.Count(h, []byte(":")) > 1 {
		return false
	}
	if i := bytes.IndexByte(port, ':'); i >= 0 {
		for _, c := range port[i+1:] {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

var hostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()
