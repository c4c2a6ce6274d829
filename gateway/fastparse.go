package gateway

import "bytes"

// The fast path's request parser: it reads only what routing, framing and the hop-by-hop
// rules need and says no to anything else, which the general path then takes.

// parse reads the request line and headers of buf[r:r+headLen]. False: not for the fast
// path (fasthttp will accept or reject it).
func (fc *fastConn) parse() bool {
	req := &fc.req
	head := fc.buf[fc.r : fc.r+req.headLen-2] // each line ends in CRLF
	req.keep = req.keep[:0]
	req.host, req.xff, req.xfp, req.xfh = nil, nil, nil, nil
	req.cl, req.close = 0, false

	eol := bytes.Index(head, crlf)
	line := head[:eol]
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !isToken(line[:sp]) {
		return false
	}
	req.method = line[:sp]
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 || rest[0] != '/' || string(rest[sp+1:]) != "HTTP/1.1" {
		return false
	}
	req.uri = rest[:sp]
	for _, b := range req.uri {
		if b <= ' ' || b == 0x7f {
			return false
		}
	}
	off := eol + 2
	sawCL := false
	for off < len(head) {
		start := off
		var name, value []byte
		var ok bool
		line, name, value, off, ok = headerAt(head, off)
		if !ok {
			return false // also obs-fold (a line starting with a space)
		}
		for _, b := range value {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return false
			}
		}
		drop := false
		switch len(name) {
		case 2:
			drop = bytes.EqualFold(name, []byte("TE"))
		case 4:
			if bytes.EqualFold(name, []byte("Host")) {
				if req.host != nil || len(value) == 0 {
					return false
				}
				req.host = value
			}
		case 6:
			if bytes.EqualFold(name, []byte("Expect")) {
				return false
			}
		case 7:
			if bytes.EqualFold(name, []byte("Upgrade")) {
				return false
			}
			drop = bytes.EqualFold(name, []byte("Trailer"))
		case 10:
			if bytes.EqualFold(name, []byte("Connection")) {
				if !connectionOnly(value, &req.close) {
					return false // names other headers to drop: the general path does that
				}
				drop = true
			} else {
				drop = bytes.EqualFold(name, []byte("Keep-Alive"))
			}
		case 14:
			if bytes.EqualFold(name, []byte("Content-Length")) {
				n, ok := parseLength(value)
				if sawCL || !ok || n > prefetchBytes {
					return false
				}
				sawCL, req.cl = true, n
			}
		case 15:
			if bytes.EqualFold(name, []byte("X-Forwarded-For")) {
				if req.xff != nil {
					return false
				}
				req.xff, drop = value, true
			}
		case 16:
			if bytes.EqualFold(name, []byte("X-Forwarded-Host")) {
				if req.xfh != nil {
					return false
				}
				req.xfh, drop = value, true
			} else {
				drop = bytes.EqualFold(name, []byte("Proxy-Connection"))
			}
		case 17:
			if bytes.EqualFold(name, []byte("X-Forwarded-Proto")) {
				if req.xfp != nil {
					return false
				}
				req.xfp, drop = value, true
			} else if bytes.EqualFold(name, []byte("Transfer-Encoding")) {
				return false
			}
		case 18:
			drop = bytes.EqualFold(name, []byte("Proxy-Authenticate"))
		case 19:
			drop = bytes.EqualFold(name, []byte("Proxy-Authorization"))
		}
		if !drop {
			req.keep = append(req.keep, [2]int{fc.r + start, fc.r + start + len(line)})
		}
	}
	return req.host != nil
}

var crlf = []byte("\r\n")

// headerAt splits the header line at head[off:] (head's lines each end in CRLF) and
// returns the offset of the next. ok is false when the name is not a token.
func headerAt(head []byte, off int) (line, name, value []byte, next int, ok bool) {
	eol := bytes.Index(head[off:], crlf)
	line = head[off : off+eol]
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return line, nil, nil, off + eol + 2, false
	}
	return line, line[:colon], trimOWS(line[colon+1:]), off + eol + 2, true
}

// connectionOnly reports whether a Connection header carries only close and keep-alive.
func connectionOnly(v []byte, close *bool) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte(","))
		tok = trimOWS(tok)
		switch {
		case len(tok) == 0 || bytes.EqualFold(tok, []byte("keep-alive")):
		case bytes.EqualFold(tok, []byte("close")):
			*close = true
		default:
			return false
		}
	}
	return true
}

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

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// isToken: RFC 9110 tchar.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tchar[c] {
			return false
		}
	}
	return true
}

var tchar = func() (t [128]bool) {
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
