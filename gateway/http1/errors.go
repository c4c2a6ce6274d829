package http1

import "strconv"

// Error is a message the gateway refuses, with how it answers: the status, the reason
// its metrics and access log name, and the text the client reads.
type Error struct {
	Status int
	Reason string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// The refusals of a request head. They are values, never changed.
var (
	ErrMalformed    = &Error{400, "malformed", "rouse: malformed request\n"}
	ErrBadHost      = &Error{400, "bad_host", "rouse: missing, repeated or invalid Host\n"}
	ErrBadLength    = &Error{400, "malformed", "rouse: invalid or repeated Content-Length\n"}
	ErrBadFraming   = &Error{400, "conflicting_framing", "rouse: request has both Content-Length and Transfer-Encoding, or Transfer-Encoding in HTTP/1.0\n"}
	ErrNotChunked   = &Error{400, "conflicting_framing", "rouse: a request's Transfer-Encoding must end in chunked\n"}
	ErrCoding       = &Error{501, "unsupported_coding", "rouse: the only request transfer coding accepted is chunked\n"}
	ErrExpectation  = &Error{417, "expectation", "rouse: the only expectation supported is 100-continue\n"}
	ErrVersion      = &Error{505, "version", "rouse: only HTTP/1.0 and HTTP/1.1 are served here\n"}
	ErrMethod       = &Error{501, "method", "rouse: CONNECT is not supported\n"}
	ErrHeadTooLarge = &Error{431, "header_too_large", "rouse: request headers too large\n"}
	ErrBodyTooLarge = &Error{413, "body_too_large", "rouse: request body too large\n"}
	ErrBadChunk     = &Error{400, "malformed_body", "rouse: malformed chunked request body\n"}
	ErrReadTimeout  = &Error{408, "read_timeout", "rouse: request not received in time\n"}
	// ErrUpstream marks a response head or body from an instance that breaks the rules.
	ErrUpstream = &Error{502, "upstream_error", "malformed response from the instance"}
)

// StatusText is the reason phrase of the statuses the gateway answers itself.
func StatusText(code int) string {
	switch code {
	case 100:
		return "Continue"
	case 308:
		return "Permanent Redirect"
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 413:
		return "Content Too Large"
	case 417:
		return "Expectation Failed"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Status " + strconv.Itoa(code)
}

// AppendAnswer appends a plain-text answer of the gateway's own. extra are whole
// header lines with their CRLF (e.g. "Retry-After: 1\r\n"). head: the answer is to a
// HEAD request, so it has the length of msg but not msg (RFC 9110 §9.3.2).
func AppendAnswer(dst []byte, status int, msg string, close, head bool, extra ...[]byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(append(dst, ' '), StatusText(status)...)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, "\r\n"...)
	for _, e := range extra {
		dst = append(dst, e...)
	}
	if close {
		dst = append(dst, "Connection: close\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	if head {
		return dst
	}
	return append(dst, msg...)
}
