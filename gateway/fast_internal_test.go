package gateway

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/gateway/clock"
)

// parsed runs the fast path's request parser on one head.
func parsed(t *testing.T, raw string) (*fastConn, bool) {
	t.Helper()
	fc := &fastConn{buf: make([]byte, len(raw)+64)}
	fc.w = copy(fc.buf, raw)
	i := strings.Index(raw, "\r\n\r\n")
	if i < 0 {
		t.Fatalf("no head in %q", raw)
	}
	fc.req.headLen = i + 4
	return fc, fc.parse()
}

func TestFastParse(t *testing.T) {
	const h = "Host: a.default.example.com\r\n"
	taken := map[string]struct {
		cl    int64
		close bool
		kept  []string
	}{
		"GET / HTTP/1.1\r\n" + h + "\r\n": {kept: []string{"Host: a.default.example.com"}},
		"POST /x?y=1 HTTP/1.1\r\n" + h + "Content-Length: 5\r\nX-A:  b \r\n\r\nhello": {cl: 5,
			kept: []string{"Host: a.default.example.com", "Content-Length: 5", "X-A:  b "}},
		"GET / HTTP/1.1\r\n" + h + "Connection: close\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n": {close: true,
			kept: []string{"Host: a.default.example.com"}},
		"GET / HTTP/1.1\r\nhost: a.default.example.com:8080\r\nconnection: keep-alive\r\n\r\n": {kept: []string{"host: a.default.example.com:8080"}},
	}
	for raw, want := range taken {
		fc, ok := parsed(t, raw)
		if !ok {
			t.Errorf("not taken: %q", raw)
			continue
		}
		var kept []string
		for _, s := range fc.req.keep {
			kept = append(kept, string(fc.buf[s[0]:s[1]]))
		}
		if fc.req.cl != want.cl || fc.req.close != want.close || strings.Join(kept, "|") != strings.Join(want.kept, "|") {
			t.Errorf("%q: cl=%d close=%v kept=%q", raw, fc.req.cl, fc.req.close, kept)
		}
	}
	// Everything else goes to the general path, which accepts or rejects it.
	for _, raw := range []string{
		"GET / HTTP/1.0\r\n" + h + "\r\n",
		"GET http://a/ HTTP/1.1\r\n" + h + "\r\n",
		"GET * HTTP/1.1\r\n" + h + "\r\n",
		"GET / HTTP/1.1\r\n\r\n", // no Host
		"GET / HTTP/1.1\r\n" + h + h + "\r\n",
		"POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 4\r\nContent-Length: 4\r\n\r\n",
		"POST / HTTP/1.1\r\n" + h + "Content-Length: -1\r\n\r\n",
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 1e3\r\n\r\n",
		"POST / HTTP/1.1\r\n" + h + "Content-Length: 9000\r\n\r\n", // streams
		"POST / HTTP/1.1\r\n" + h + "Expect: 100-continue\r\nContent-Length: 1\r\n\r\n",
		"GET / HTTP/1.1\r\n" + h + "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET / HTTP/1.1\r\n" + h + "Connection: X-Private\r\n\r\n",
		"GET / HTTP/1.1\r\n" + h + " folded\r\n\r\n",
		"GET / HTTP/1.1\r\n" + h + "Bad Name: x\r\n\r\n",
		"GET / HTTP/1.1\r\n" + h + "X: a\x00b\r\n\r\n",
		"GET / HTTP/1.1\r\n" + h + "X: a\nb\r\n\r\n",
		"GET /a b HTTP/1.1\r\n" + h + "\r\n",
		"G@T / HTTP/1.1\r\n" + h + "\r\n",
		"GET / HTTP/1.1\r\n" + h + "X-Forwarded-For: a\r\nX-Forwarded-For: b\r\n\r\n",
	} {
		if _, ok := parsed(t, raw); ok {
			t.Errorf("taken: %q", raw)
		}
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
		// Every split into two reads finds the end at the same byte.
		for cut := 0; cut <= len(msg); cut++ {
			var s chunkScanner
			n1, end := s.scan([]byte(msg[:cut]))
			total := n1
			if !end {
				n2, end2 := s.scan([]byte(msg[cut:]))
				total, end = n1+n2, end2
			}
			if n1 < 0 || !end || total != len(body) {
				t.Fatalf("%q cut at %d: took %d (end %v), want %d", body, cut, total, end, len(body))
			}
		}
	}
	for _, bad := range []string{"x\r\n", "\r\n", "5\r\nhelloX\r\n", "5\nhello", "0\r\n\rX", "1234567890abcdef0\r\n"} {
		var s chunkScanner
		if n, _ := s.scan([]byte(bad)); n >= 0 {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// relayed runs relay with the instance sending resp and returns what the client got.
func relayed(t *testing.T, method, resp string) (client string, status int, reuse bool, err error) {
	t.Helper()
	g := &Gateway{cfg: Config{WriteTimeout: time.Second}, clk: clock.Real{}}
	cl, cg := net.Pipe()
	ug, ui := net.Pipe()
	go func() {
		ui.Read(make([]byte, 64)) // the request
		io.WriteString(ui, resp)
		ui.Close()
	}()
	got := make(chan string)
	go func() { b, _ := io.ReadAll(cl); got <- string(b) }()
	fc := &fastConn{g: g, c: cg}
	uc := &upConn{c: ug, buf: make([]byte, 16<<10)}
	if err = uc.roundTrip([]byte(method+" / HTTP/1.1\r\n\r\n"), []byte(method)); err == nil {
		status, _, err, reuse = fc.relay(uc, []byte(method))
	}
	cg.Close()
	return <-got, status, reuse, err
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
		{"close-delimited", "GET", "HTTP/1.1 200 OK\r\n\r\nuntil the end",
			"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", false},
		{"informational skipped", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
			"HTTP/1.1 204 No Content\r\n\r\n", true},
		{"HEAD has no body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true},
		{"length and chunked", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", true},
		{"connection close", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
		{"close token", "GET", "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx",
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
		{"a header named like close", "GET", "HTTP/1.1 200 OK\r\nConnection: X-Closer\r\nX-Closer: 1\r\nContent-Length: 1\r\n\r\nx",
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", true},
	} {
		got, _, reuse, err := relayed(t, c.method, c.resp)
		if err != nil || got != c.want || reuse != c.reuse {
			t.Errorf("%s: err=%v reuse=%v\n got %q\nwant %q", c.name, err, reuse, got, c.want)
		}
	}
	for _, bad := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
		"SSH-2.0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	} {
		if _, _, reuse, err := relayed(t, "GET", bad); err == nil || reuse {
			t.Errorf("%q: relayed (reuse %v)", bad, reuse)
		}
	}
}
