// Package http1 is the gateway's one implementation of the HTTP/1.1 rules (RFC 9110,
// RFC 9112): request and response head parsing, message framing, the chunked coding,
// hop-by-hop and Connection-token stripping, X-Forwarded-* rewriting, which messages
// carry a body, and the gateway's own error answers. It is stricter than the RFCs
// require wherever a recipient may choose (bare LF, obs-fold, duplicate framing headers
// are errors, not repaired), because a proxy that repairs what the next hop reads
// differently is how smuggling works. It uses only the standard library and allocates
// nothing per message: results are offsets and slices into the caller's buffer.
package http1

import "bytes"

// Span is a header line, [Start, End) relative to the head's first byte, without its CRLF.
type Span struct{ Start, End int32 }

// IsToken reports whether b is a non-empty RFC 9110 token.
func IsToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// tchar: RFC 9110 §5.6.2.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validValue reports whether a field value (OWS already trimmed) holds only VCHAR,
// obs-text, SP and HTAB: no CR, LF, NUL or other control byte.
func validValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// equalFold compares ASCII case-insensitively, and only ASCII: bytes.EqualFold folds
// Unicode too (U+212A KELVIN SIGN is 'k'), so "chun\u212aed" would pass for "chunked"
// where every other parser sees an unknown coding.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// startLine checks that head ends with the blank line and that its first line ends in
// CRLF; fields is head without the blank line (each line keeps its CRLF), and
// fields[:eol-1] is the first line.
func startLine(head []byte) (fields []byte, eol int, ok bool) {
	if len(head) < 4 || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return nil, 0, false
	}
	fields = head[:len(head)-2]
	eol = bytes.IndexByte(fields, '\n')
	return fields, eol, eol >= 1 && fields[eol-1] == '\r'
}

// field splits the header line at head[off:] and returns the offset of the next line.
// head ends with the CRLF of its last field line (the blank line is not part of it).
// ok is false for anything but `token ":" OWS value OWS CRLF` with a valid value: a
// line without CRLF (a bare LF or CR inside it), obs-fold, whitespace before the colon.
// vstart is the value's offset in head.
func field(head []byte, off int) (line, name, value []byte, vstart, next int, ok bool) {
	eol := bytes.IndexByte(head[off:], '\n')
	if eol < 1 || head[off+eol-1] != '\r' {
		return nil, nil, nil, 0, len(head), false
	}
	line = head[off : off+eol-1]
	next = off + eol + 1
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !IsToken(line[:colon]) {
		return line, nil, nil, 0, next, false
	}
	v := line[colon+1:]
	lead := 0
	for lead < len(v) && (v[lead] == ' ' || v[lead] == '\t') {
		lead++
	}
	value = trimOWS(v[lead:])
	if !validValue(value) {
		return line, nil, nil, 0, next, false
	}
	return line, line[:colon], value, off + colon + 1 + lead, next, true
}

// header names the parsers act on, by identity.
type hdr uint8

const (
	hOther hdr = iota
	hHost
	hContentLength
	hTransferEncoding
	hConnection
	hKeepAlive
	hProxyConnection
	hTE
	hTrailer
	hUpgrade
	hProxyAuthenticate
	hProxyAuthorization
	hExpect
	hXForwardedFor
	hXForwardedHost
	hXForwardedProto
	hHTTP2Settings
)

// classify names the headers the rules treat specially; one switch on length first so
// the common header costs one comparison.
func classify(name []byte) hdr {
	eq := func(s string) bool { return equalFold(name, s) }
	switch len(name) {
	case 2:
		if eq("TE") {
			return hTE
		}
	case 4:
		if eq("Host") {
			return hHost
		}
	case 6:
		if eq("Expect") {
			return hExpect
		}
	case 7:
		if eq("Upgrade") {
			return hUpgrade
		}
		if eq("Trailer") {
			return hTrailer
		}
	case 10:
		if eq("Connection") {
			return hConnection
		}
		if eq("Keep-Alive") {
			return hKeepAlive
		}
	case 14:
		if eq("Content-Length") {
			return hContentLength
		}
		if eq("HTTP2-Settings") {
			return hHTTP2Settings
		}
	case 15:
		if eq("X-Forwarded-For") {
			return hXForwardedFor
		}
	case 16:
		if eq("X-Forwarded-Host") {
			return hXForwardedHost
		}
		if eq("Proxy-Connection") {
			return hProxyConnection
		}
	case 17:
		if eq("X-Forwarded-Proto") {
			return hXForwardedProto
		}
		if eq("Transfer-Encoding") {
			return hTransferEncoding
		}
	case 18:
		if eq("Proxy-Authenticate") {
			return hProxyAuthenticate
		}
	case 19:
		if eq("Proxy-Authorization") {
			return hProxyAuthorization
		}
	}
	return hOther
}

// hopByHop: the headers RFC 9110 §7.6.1 says a proxy does not forward, plus the
// proxy-authentication pair (they are for this hop's proxy) and Proxy-Connection (a
// non-standard spelling of Connection).
func (h hdr) hopByHop() bool {
	switch h {
	case hConnection, hKeepAlive, hProxyConnection, hTE, hTrailer, hUpgrade, hProxyAuthenticate, hProxyAuthorization:
		return true
	}
	return false
}

// endToEnd: a request field forwarded as it came — not hop-by-hop, not framing (the
// gateway frames what it sends), not Expect (answered here) or HTTP2-Settings (this hop's
// upgrade). X-Forwarded-* are end to end but rewritten by Forwarded's rules.
func (h hdr) endToEnd() bool {
	return !h.hopByHop() && !h.framing() && h != hExpect && h != hHTTP2Settings
}

// EndToEnd reports whether a request field of this name goes to the next hop as it came,
// by the rule AppendOutgoing applies: for an engine that forwards fields itself (HTTP/2
// to an h2c instance).
func EndToEnd(name string) bool { return classify([]byte(name)).endToEnd() }

// HopByHop reports whether a field of this name belongs to one connection only (the list
// hopByHop keeps), for a proxy that forwards net/http headers (rouse guard).
func HopByHop(name string) bool { return classify([]byte(name)).hopByHop() }

// framing headers are never dropped because a Connection header names them: the
// gateway relays the body with the framing they declare, so the next hop needs them.
func (h hdr) framing() bool { return h == hContentLength || h == hTransferEncoding || h == hHost }

// maxNamed bounds the header names one message's Connection headers may list: each kept
// line is compared with each name, so an unbounded list would make one head cost
// lines × names comparisons (a 32 KiB head could take a second of CPU).
const maxNamed = 16

// connTokens is what a message's Connection headers say.
type connTokens struct {
	close, keepAlive, upgrade bool
	named                     [][]byte // other headers it names, which are hop-by-hop too
}

func (t *connTokens) add(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte(","))
		tok = trimOWS(tok)
		switch {
		case len(tok) == 0:
		case !IsToken(tok):
			return false
		case equalFold(tok, "close"):
			t.close = true
		case equalFold(tok, "keep-alive"):
			t.keepAlive = true
		case equalFold(tok, "upgrade"):
			t.upgrade = true
		case t.names(tok):
		default:
			if len(t.named) == maxNamed {
				return false
			}
			t.named = append(t.named, tok)
		}
	}
	return true
}

// names reports whether the Connection headers name name.
func (t *connTokens) names(name []byte) bool {
	for _, n := range t.named {
		if len(n) == len(name) && equalFold(n, string(name)) {
			return true
		}
	}
	return false
}

// listHas reports whether a comma-separated list holds tok (ASCII case-insensitive).
func listHas(list []byte, tok string) bool {
	for len(list) > 0 {
		var t []byte
		t, list, _ = bytes.Cut(list, []byte(","))
		if equalFold(trimOWS(t), tok) {
			return true
		}
	}
	return false
}

// parseLength reads a Content-Length value: 1 to 18 digits, nothing else.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, true
}
