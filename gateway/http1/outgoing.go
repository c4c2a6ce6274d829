package http1

import "strconv"

// Outgoing is a request to forward to an instance that did not arrive as HTTP/1.1 (an
// HTTP/2 stream): its fields were parsed by another engine, so they are checked again
// here by this package's rules before any byte of them goes out.
type Outgoing struct {
	Method, Path, Host string
	// Header is the request's fields (net/http's http.Header is this type).
	Header map[string][]string
	Body   Body  // NoBody, Length or Chunked (the gateway chunks a body of unknown length)
	Length int64 // with Body == Length
}

// AppendOutgoing appends the head of o as AppendRequestHead would forward it: an
// origin-form request line in HTTP/1.1, Host, the fields that are not hop-by-hop,
// framing or X-Forwarded-*, the framing the gateway sends the body with, and
// X-Forwarded-* by the same rules. A field name that is not a token, a value with a
// control byte, or a method that is not a token is ErrMalformed: nothing is written.
func AppendOutgoing(dst []byte, o *Outgoing, fwd Forwarded) ([]byte, error) {
	if !IsToken([]byte(o.Method)) || !ValidHost([]byte(o.Host)) || !validTarget(o.Path) || !validEscapes([]byte(o.Path)) {
		return dst, ErrMalformed
	}
	start := len(dst)
	dst = append(dst, o.Method...)
	dst = append(dst, ' ')
	if o.Path == "" || o.Path[0] == '?' {
		dst = append(dst, '/')
	}
	dst = append(dst, o.Path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, o.Host...)
	dst = append(dst, "\r\n"...)
	var xff []string
	var xfp, xfh string
	for name, vs := range o.Header {
		nb := []byte(name)
		if !IsToken(nb) {
			return dst[:start], ErrMalformed
		}
		h := classify(nb)
		for _, v := range vs {
			vb := trimOWS([]byte(v))
			if !validValue(vb) {
				return dst[:start], ErrMalformed
			}
			switch {
			case h == hXForwardedFor:
				if len(vb) > 0 {
					xff = append(xff, string(vb))
				}
			case h == hXForwardedProto:
				if xfp == "" {
					xfp = string(vb)
				}
			case h == hXForwardedHost:
				if xfh == "" {
					xfh = string(vb)
				}
			case !h.endToEnd():
			case fwd.Traceparent != nil && isTraceparent(nb):
			default:
				dst = append(append(append(append(dst, name...), ": "...), vb...), "\r\n"...)
			}
		}
	}
	if fwd.Traceparent != nil {
		dst = append(append(append(dst, "Traceparent: "...), fwd.Traceparent...), "\r\n"...)
	}
	switch o.Body {
	case Length:
		dst = strconv.AppendInt(append(dst, "Content-Length: "...), o.Length, 10)
		dst = append(dst, "\r\n"...)
	case Chunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	dst = append(dst, "X-Forwarded-For: "...)
	for _, v := range xff {
		dst = append(append(dst, v...), ", "...)
	}
	dst = append(dst, fwd.ClientIP...)
	dst = append(dst, "\r\nX-Forwarded-Proto: "...)
	if fwd.Trust && xfp != "" {
		dst = append(dst, xfp...)
	} else {
		dst = append(dst, fwd.Proto...)
	}
	dst = append(dst, "\r\nX-Forwarded-Host: "...)
	if fwd.Trust && xfh != "" {
		dst = append(dst, xfh...)
	} else {
		dst = append(dst, o.Host...)
	}
	return append(dst, "\r\n\r\n"...), nil
}

// validTarget: an origin-form target is visible ASCII only (a space or control byte
// would end the request line early).
func validTarget(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] == 0x7f {
			return false
		}
	}
	return true
}
