package http1

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func head(raw string) []byte {
	i := strings.Index(raw, "\r\n\r\n")
	return []byte(raw[:i+4])
}

func TestParseRequest(t *testing.T) {
	const h = "Host: a.default.example.com\r\n"
	taken := map[string]struct {
		host, path string
		body       Body
		n          int64
		close      bool
		kept       []string
		xff        []string
	}{
		"GET / HTTP/1.1\r\n" + h + "\r\n": {host: "a.default.example.com", path: "/"},
		"POST /x?y=1 HTTP/1.1\r\n" + h + "Content-Length: 5\r\nX-A:  b \r\n\r\nhello": {host: "a.default.example.com", path: "/x?y=1", body: Length, n: 5,
			kept: []string{"Content-Length: 5", "X-A:  b "}},
		"GET / HTTP/1.1\r\n" + h + "Connection: close\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n": {host: "a.default.example.com", path: "/", close: true,
			xff: []string{"1.2.3.4"}},
		"GET / HTTP/1.1\r\nhost: a.default.example.com:8080\r\nconnection: keep-alive\r\n\r\n": {host: "a.default.example.com:8080", path: "/"},
		// absolute-form: the target's authority wins and replaces Host (RFC 9112 §3.2.2)
		"GET http://other.default.localhost/x?q HTTP/1.1\r\nHost: evil.example\r\n\r\n": {host: "other.default.localhost", path: "/x?q"},
		"GET HTTP://other.default.localhost HTTP/1.1\r\nHost: evil.example\r\n\r\n":     {host: "other.default.localhost", path: ""},
		// every X-Forwarded-For line's value, in order
		"GET / HTTP/1.1\r\n" + h + "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For:2.2.2.2 , 3.3.3.3\r\n\r\n": {host: "a.default.example.com", path: "/",
			xff: []string{"1.1.1.1", "2.2.2.2 , 3.3.3.3"}},
		// the headers Connection names are hop-by-hop too, framing headers excepted
		"POST / HTTP/1.1\r\n" + h + "Connection: X-Private, Content-Length\r\nX-Private: 1\r\nContent-Length: 1\r\n\r\nx": {host: "a.default.example.com", path: "/", body: Length, n: 1,
			kept: []string{"Content-Length: 1"}},
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n": {host: "a.default.example.com", path: "/", body: Chunked, kept: []string{"Transfer-Encoding: chunked"}},
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: CHUNKED\r\n\r\n": {host: "a.default.example.com", path: "/", body: Chunked, kept: []string{"Transfer-Encoding: CHUNKED"}},
		"GET / HTTP/1.0\r\n" + h + "\r\n":                                {host: "a.default.example.com", path: "/", close: true},
		"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n":                     {host: "[::1]:8080", path: "/"},
		"OPTIONS * HTTP/1.1\r\n" + h + "\r\n":                            {host: "a.default.example.com", path: "*"},
	}
	var req Request
	for raw, want := range taken {
		if err := ParseRequest(head(raw), &req); err != nil {
			t.Errorf("refused %q: %v", raw, err)
			continue
		}
		hd := head(raw)
		var kept, xff []string
		for _, s := range req.Keep {
			kept = append(kept, string(hd[s.Start:s.End]))
		}
		for _, s := range req.XFF {
			xff = append(xff, string(hd[s.Start:s.End]))
		}
		if string(req.Host) != want.host || string(req.Path) != want.path || req.Body != want.body || req.Length != want.n || req.Close != want.close ||
			strings.Join(kept, "|") != strings.Join(want.kept, "|") || strings.Join(xff, "|") != strings.Join(want.xff, "|") {
			t.Errorf("%q:\n host=%q path=%q body=%d n=%d close=%v kept=%q xff=%q", raw, req.Host, req.Path, req.Body, req.Length, req.Close, kept, xff)
		}
	}
	refused := map[string]*Error{
		"GET / HTTP/1.1\r\n\r\n":                                                                    ErrBadHost, // no Host
		"GET / HTTP/1.1\r\n" + h + h + "\r\n":                                                       ErrBadHost,
		"GET / HTTP/1.1\r\nHost: a@other.default\r\n\r\n":                                           ErrBadHost, // userinfo
		"GET http://a@b/ HTTP/1.1\r\n" + h + "\r\n":                                                 ErrBadHost,
		"GET http:/// HTTP/1.1\r\n" + h + "\r\n":                                                    ErrBadHost,
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n":                                                       ErrBadHost,
		"GET / HTTP/1.1\r\nHost:\r\n\r\n":                                                           ErrBadHost,
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n":       ErrBadFraming,
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n":       ErrBadFraming,
		"POST / HTTP/1.0\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n":                            ErrBadFraming,
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: xchunked\r\n\r\n":                           ErrNotChunked,
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked, identity\r\n\r\n":                  ErrNotChunked,
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: gzip, chunked\r\n\r\n":                      ErrCoding,
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n": ErrCoding,
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 4\r\nContent-Length: 4\r\n\r\n":                ErrBadLength,
		"POST / HTTP/1.1\r\n" + h + "Content-Length: -1\r\n\r\n":                                    ErrBadLength,
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 1e3\r\n\r\n":                                   ErrBadLength,
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 4, 4\r\n\r\n":                                  ErrBadLength,
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 4\r\n Transfer-Encoding: chunked\r\n\r\n":      ErrMalformed, // obs-fold
		"POST / HTTP/1.1\r\n" + h + "Expect: 200-ok\r\n\r\n":                                        ErrExpectation,
		"GET / HTTP/1.1\r\n" + h + "Bad Name: x\r\n\r\n":                                            ErrMalformed,
		"GET / HTTP/1.1\r\n" + h + "Name : x\r\n\r\n":                                               ErrMalformed,
		"GET / HTTP/1.1\r\n" + h + "X: a\x00b\r\n\r\n":                                              ErrMalformed,
		"GET / HTTP/1.1\r\n" + h + "X: a\nb\r\n\r\n":                                                ErrMalformed,
		"GET / HTTP/1.1\r\n" + h + "X: a\rb\r\n\r\n":                                                ErrMalformed,
		"GET / HTTP/1.1\n" + h + "\r\n":                                                             ErrMalformed,
		"GET /a b HTTP/1.1\r\n" + h + "\r\n":                                                        ErrMalformed,
		"G@T / HTTP/1.1\r\n" + h + "\r\n":                                                           ErrMalformed,
		"GET  / HTTP/1.1\r\n" + h + "\r\n":                                                          ErrMalformed,
		"GET / HTTP/2.0\r\n" + h + "\r\n":                                                           ErrVersion,
		"GET / HTTP/1.1 \r\n" + h + "\r\n":                                                          ErrMalformed,
		"GET x HTTP/1.1\r\n" + h + "\r\n":                                                           ErrMalformed,
		"GET * HTTP/1.1\r\n" + h + "\r\n":                                                           ErrMalformed,
		"GET http://::0 HTTP/1.1\r\n" + h + "\r\n":                                                  ErrBadHost,
		"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n":                                                    ErrBadHost,
		"GET http://[] HTTP/1.1\r\n" + h + "\r\n":                                                   ErrBadHost,
		"GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n":                                                 ErrBadHost,
		"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n":                                                       ErrBadHost,
		"CONNECT a:443 HTTP/1.1\r\n" + h + "\r\n":                                                   ErrMethod,
	}
	for raw, want := range refused {
		err := ParseRequest(head(raw), &req)
		if !errors.Is(err, want) {
			t.Errorf("%q: %v, want %v", raw, err, want)
		}
	}
}

func TestRequestConnectionRules(t *testing.T) {
	var req Request
	for raw, want := range map[string]struct {
		close, ka10, expect bool
		upgrade             string
	}{
		"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n":                                                     {ka10: true},
		"GET / HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n":                                  {close: true}, // ignored in 1.0
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n":                                 {expect: true},
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n":                                  {upgrade: "websocket"},
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n":                                                         {}, // no Connection: upgrade
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n": {}, // declined
		"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n":                                                    {close: true},
	} {
		if err := ParseRequest(head(raw), &req); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if req.Close != want.close || req.KeepAlive10 != want.ka10 || req.Expect100 != want.expect || string(req.Upgrade) != want.upgrade {
			t.Errorf("%q: close=%v ka10=%v expect=%v upgrade=%q", raw, req.Close, req.KeepAlive10, req.Expect100, req.Upgrade)
		}
		hd := head(raw)
		for _, s := range req.Keep {
			if l := strings.ToLower(string(hd[s.Start:s.End])); strings.HasPrefix(l, "upgrade") || strings.HasPrefix(l, "http2-settings") || strings.HasPrefix(l, "expect") {
				t.Errorf("%q: kept %q", raw, l)
			}
		}
	}
}

func TestAppendRequestHead(t *testing.T) {
	raw := "GET http://b.default.localhost?x=1 HTTP/1.0\r\nHost: evil\r\nX-Forwarded-For: 1.1.1.1\r\nX-A: 1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Host: x\r\nX-Forwarded-Host: y\r\nX-Forwarded-Proto: https\r\nConnection: keep-alive\r\n\r\n"
	var req Request
	if err := ParseRequest(head(raw), &req); err != nil {
		t.Fatal(err)
	}
	got := string(AppendRequestHead(nil, head(raw), &req, Forwarded{ClientIP: []byte("127.0.0.1"), Proto: "http"}, false))
	want := "GET /?x=1 HTTP/1.1\r\nHost: b.default.localhost\r\nX-A: 1\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: b.default.localhost\r\n\r\n"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	got = string(AppendRequestHead(nil, head(raw), &req, Forwarded{ClientIP: []byte("127.0.0.1"), Proto: "http", Trust: true}, false))
	if !strings.Contains(got, "X-Forwarded-Proto: https\r\n") || !strings.Contains(got, "X-Forwarded-Host: x\r\n") || strings.Count(got, "X-Forwarded-Host") != 1 {
		t.Errorf("trusted:\n%s", got)
	}
}

// With Forwarded.Traceparent every traceparent line or field (any case) gives way to
// the one given, in both forwarders; without it they pass as they came.
func TestTraceparentReplaced(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: a\r\ntraceparent: one\r\nX-A: 1\r\nTRACEPARENT: two\r\nTraceparentX: keep\r\ntracestate: s\r\n\r\n"
	var req Request
	if err := ParseRequest(head(raw), &req); err != nil {
		t.Fatal(err)
	}
	fwd := Forwarded{ClientIP: []byte("127.0.0.1"), Proto: "http", Traceparent: []byte("00-ours")}
	got := string(AppendRequestHead(nil, head(raw), &req, fwd, false))
	want := "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nTraceparentX: keep\r\ntracestate: s\r\nTraceparent: 00-ours\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
	if got != want {
		t.Errorf("AppendRequestHead:\n%q\nwant\n%q", got, want)
	}
	fwd.Traceparent = nil
	if got := string(AppendRequestHead(nil, head(raw), &req, fwd, false)); !strings.Contains(got, "traceparent: one\r\n") || !strings.Contains(got, "TRACEPARENT: two\r\n") {
		t.Errorf("off: %q", got)
	}
	o := &Outgoing{Method: "GET", Path: "/", Host: "a", Header: map[string][]string{"Traceparent": {"one", "two"}, "traceparent": {"three"}, "Tracestate": {"s"}}}
	fwd.Traceparent = []byte("00-ours")
	out, err := AppendOutgoing(nil, o, fwd)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.ToLower(string(out)), "traceparent:"); n != 1 || !strings.Contains(string(out), "Traceparent: 00-ours\r\n") || !strings.Contains(string(out), "Tracestate: s\r\n") {
		t.Errorf("AppendOutgoing: %q", out)
	}
}

// FirstValue gives what net/http's Header.Get gives: the first line's value, trimmed,
// whether or not the line is forwarded.
func TestFirstValue(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: a\r\nConnection: traceparent\r\nX-B: 0\r\ntraceparent:  first  \r\nTraceparent: second\r\n\r\n"
	var req Request
	if err := ParseRequest(head(raw), &req); err != nil {
		t.Fatal(err)
	}
	if got := string(FirstValue(head(raw), "traceparent")); got != "first" {
		t.Errorf("FirstValue = %q, want %q", got, "first")
	}
	if got := FirstValue(head(raw), "x-missing"); got != nil {
		t.Errorf("missing: %q", got)
	}
	if got := req.KeptValue(head(raw), "traceparent"); got != nil {
		t.Errorf("a Connection-named field is not kept, yet KeptValue = %q", got)
	}
}

func TestChunkScanner(t *testing.T) {
	valid := []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
		"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n",
	}
	for _, body := range valid {
		msg := body + "NEXT"
		// Every split into two reads finds the end at the same byte, and the same data.
		for cut := 0; cut <= len(msg); cut++ {
			var s ChunkScanner
			n1, err := s.Scan([]byte(msg[:cut]))
			total := n1
			if err == nil && !s.Done() {
				var n2 int
				n2, err = s.Scan([]byte(msg[cut:]))
				total += n2
			}
			if err != nil || !s.Done() || total != len(body) {
				t.Fatalf("%q cut at %d: took %d (done %v, %v), want %d", body, cut, total, s.Done(), err, len(body))
			}
		}
	}
	for _, bad := range []string{"x\r\n", "\r\n", "5\r\nhelloX\r\n", "5\r\nhelloX0\r\n\r\n", "5\nhello", "5\r\nhello\n0\r\n\r\n", "0\r\n\rX",
		"1234567890abcdef0\r\n", "5;a\nb\r\n", "0\r\nBad Trailer: 1\r\n\r\n", "0\r\nX: a\x00\r\n\r\n", "0\r\nX: 1\n\r\n", " 5\r\n", "5 x\r\n", "5 ;ext\r\nhello\r\n0\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n"} {
		var s ChunkScanner
		if _, err := s.Scan([]byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	// Next splits data from framing: the data is what the chunks carry.
	var s ChunkScanner
	b := []byte("3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
	var data string
	for len(b) > 0 && !s.Done() {
		n, isData, err := s.Next(b)
		if err != nil {
			t.Fatal(err)
		}
		if isData {
			data += string(b[:n])
		}
		b = b[n:]
	}
	if data != "abcde" || len(b) != 0 {
		t.Fatalf("data %q, left %q", data, b)
	}
}

// relayed is what a client gets for resp (head and body bytes as the gateway forwards
// them) and whether the connection may be kept.
func relayed(method, resp string) (string, bool, error) {
	i := strings.Index(resp, "\r\n\r\n")
	if i < 0 {
		return "", false, ErrUpstream
	}
	hd := []byte(resp[:i+4])
	var r Response
	if err := ParseResponse(hd, []byte(method), &r); err != nil {
		return "", false, err
	}
	if r.Status < 200 && r.Status != 101 {
		return relayed(method, resp[i+4:])
	}
	if r.Status == 101 {
		return "", false, ErrUpstream // not asked for
	}
	out := string(AppendResponseHead(nil, hd, &r, r.Body == UntilClose, false))
	body := resp[i+4:]
	switch r.Body {
	case Length:
		if int64(len(body)) < r.Length {
			return out, false, ErrUpstream
		}
		out += body[:r.Length]
		body = body[r.Length:]
	case Chunked:
		var s ChunkScanner
		n, err := s.Scan([]byte(body))
		if err != nil || !s.Done() {
			return out, false, ErrUpstream
		}
		out += body[:n]
		body = body[n:]
	case UntilClose:
		out += body
		body = ""
	}
	return out, !r.Close && body == "", nil
}

func TestRelayResponses(t *testing.T) {
	for _, c := range []struct {
		name, method, resp, want string
		reuse                    bool
	}{
		{"length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi",
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi", true},
		{"chunked with trailer", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nT: 1\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nT: 1\r\n\r\n", true},
		{"hop-by-hop and named", "GET", "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Keep: 1\r\nContent-Length: 0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nX-Keep: 1\r\nContent-Length: 0\r\n\r\n", true},
		{"framing named by Connection stays", "GET", "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nhi",
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", true},
		{"chunked named by Connection stays", "GET", "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", true},
		{"close-delimited", "GET", "HTTP/1.1 200 OK\r\n\r\nuntil the end",
			"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", false},
		{"informational skipped", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
			"HTTP/1.1 204 No Content\r\n\r\n", true},
		{"HEAD has no body, and is not trusted to have sent none", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", false},
		{"HEAD of an empty resource", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
		{"204 announcing a body", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
			"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false},
		{"304 announcing a body", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
			"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false},
		{"length and chunked", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", true},
		{"connection close", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
		{"close token", "GET", "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx",
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
		{"a header named like close", "GET", "HTTP/1.1 200 OK\r\nConnection: X-Closer\r\nX-Closer: 1\r\nContent-Length: 1\r\n\r\nx",
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", true},
		{"bytes after the end", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	} {
		got, reuse, err := relayed(c.method, c.resp)
		if err != nil || got != c.want || reuse != c.reuse {
			t.Errorf("%s: err=%v reuse=%v\n got %q\nwant %q", c.name, err, reuse, got, c.want)
		}
	}
	for _, bad := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
		"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nxx",
		"HTTP/1.1 2x0 OK\r\n\r\n",
		"SSH-2.0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nX: a\nb\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		if _, reuse, err := relayed("GET", bad); err == nil || reuse {
			t.Errorf("%q: relayed (reuse %v)", bad, reuse)
		}
	}
}

func TestAppendAnswer(t *testing.T) {
	got := string(AppendAnswer(nil, 503, "busy\n", true, false, []byte("Retry-After: 1\r\n")))
	want := "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
	if got != want {
		t.Fatalf("%q", got)
	}
	// To HEAD: the same head, no body (RFC 9110 §9.3.2).
	if got := string(AppendAnswer(nil, 503, "busy\n", true, true, []byte("Retry-After: 1\r\n"))); got != strings.TrimSuffix(want, "busy\n") {
		t.Fatalf("HEAD: %q", got)
	}
	if got := string(AppendMillis(nil, 183)); got != "183ms" {
		t.Fatal(got)
	}
}

// A Connection header naming many headers made every kept line be compared with every
// name: a 32 KiB head cost 0.3 s of CPU. Names are bounded (maxNamed), so the worst head
// costs lines × 16 comparisons (repeats are counted once).
func hostileConnectionHead(names int) []byte {
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: a\r\nConnection: ")
	for i := range names {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "a%d", i)
	}
	b.WriteString("\r\n")
	for b.Len() < 32<<10-8 {
		b.WriteString("x:\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func TestConnectionNamesBounded(t *testing.T) {
	var req Request
	if err := ParseRequest(hostileConnectionHead(6000), &req); !errors.Is(err, ErrMalformed) {
		t.Fatalf("6000 names: %v, want %v", err, ErrMalformed)
	}
	if err := ParseRequest(hostileConnectionHead(maxNamed), &req); err != nil {
		t.Fatalf("%d names: %v", maxNamed, err)
	}
	var resp Response
	h := hostileConnectionHead(6000)
	copy(h, "HTTP/1.1 200 OK\r\nHost: a\r\n")
	if err := ParseResponse(append([]byte("HTTP/1.1 200 OK\r\n"), h[len("GET / HTTP/1.1\r\n"):]...), []byte("GET"), &resp); !errors.Is(err, ErrUpstream) {
		t.Fatalf("response with 6000 names: %v", err)
	}
}

func BenchmarkParseRequestWorstHead(b *testing.B) {
	h := hostileConnectionHead(maxNamed)
	var req Request
	for b.Loop() {
		if err := ParseRequest(h, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// KeptValue finds a forwarded header's value: the first line of that name, any case,
// OWS trimmed; a line the Connection header names is not kept, so not found.
func TestKeptValue(t *testing.T) {
	for _, c := range []struct{ head, want string }{
		{"GET / HTTP/1.1\r\nHost: a\r\nrouse-TAG: \t blue \t\r\nRouse-Tag: green\r\n\r\n", "blue"},
		{"GET / HTTP/1.1\r\nHost: a\r\nRouse-Tags: blue\r\n\r\n", ""},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Rouse-Tag\r\nRouse-Tag: blue\r\n\r\n", ""},
		{"GET / HTTP/1.1\r\nHost: a\r\nRouse-Tag:\r\n\r\n", ""},
	} {
		var req Request
		if err := ParseRequest([]byte(c.head), &req); err != nil {
			t.Fatalf("%q: %v", c.head, err)
		}
		if got := string(req.KeptValue([]byte(c.head), "Rouse-Tag")); got != c.want {
			t.Errorf("%q: %q, want %q", c.head, got, c.want)
		}
	}
}

// HopByHop names the fields of one connection, in any case; framing and end-to-end
// fields are not among them.
func TestHopByHop(t *testing.T) {
	for name, want := range map[string]bool{
		"Connection": true, "keep-alive": true, "Proxy-Connection": true, "TE": true, "Trailer": true,
		"Upgrade": true, "Proxy-Authenticate": true, "proxy-authorization": true,
		"Transfer-Encoding": false, "Content-Length": false, "Host": false, "X-Forwarded-For": false, "Accept": false,
	} {
		if got := HopByHop(name); got != want {
			t.Errorf("HopByHop(%q) = %v, want %v", name, got, want)
		}
	}
}
