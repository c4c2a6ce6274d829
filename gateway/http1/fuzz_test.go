package http1_test

// Differential fuzzing of the gateway's HTTP/1.1 rules against Go's net/http.
//
// The property of every target: http1 may be stricter than net/http, never more
// lenient, and where both accept they agree on what the message is (method, host,
// framing, where it ends, its body bytes, whether the connection closes). An input
// http1 refuses is never compared: refusing what Go accepts is the allowed asymmetry.
//
// Go's leniencies the properties accommodate (without copying them): bare LF line
// ends, obs-fold, whitespace around field names, duplicate identical Content-Length,
// Content-Length beside Transfer-Encoding, Transfer-Encoding ignored in HTTP/1.0, Host
// optional in HTTP/1.0, any Expect, any 3-digit status (even "+20"). None is asserted:
// they are simply the inputs http1 refuses.
//
// The discrepancies these targets found (all fixed in http1) are named in knownRequest,
// knownResponse and knownChunked, and their inputs are kept as regression seeds in
// testdata/fuzz (the 4-5 KiB go-limit ones in TestFuzzChunkedLimits); a failure that
// shows one again says which.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rouse-run/rouse/gateway/http1"
)

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// checker fails a property; known names a reported discrepancy the input shows.
type checker struct {
	t     *testing.T
	known func() string
}

func (c *checker) fail(format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if k := c.known(); k != "" {
		c.t.Fatalf("regression of discrepancy %s: %s", k, msg)
	}
	c.t.Fatal(msg)
}

// goReader is the reference's view of data: pos is how many bytes net/http consumed.
type goReader struct {
	rd    *bytes.Reader
	br    *bufio.Reader
	total int
}

func newGoReader(data []byte) *goReader {
	rd := bytes.NewReader(data)
	return &goReader{rd: rd, br: bufio.NewReader(rd), total: len(data)}
}

func (g *goReader) pos() int { return g.total - g.br.Buffered() - g.rd.Len() }

// goLimit reports a refusal of net/http's for size alone: a chunk line of 4 KiB, 16 KiB
// of chunk overhead, a trailer section larger than the read buffer (4 KiB).
func goLimit(err error) bool {
	if err == nil {
		return false
	}
	switch err.Error() {
	case "header line too long", // net/http/internal.ErrLineTooLong
		"chunked encoding contains too much non-data",
		"http: suspiciously long trailer after chunked body":
		return true
	}
	return false
}

// goChunked reads a chunked body as net/http does: its chunked reader, then the
// trailer section. It returns the data and how many bytes of b it took.
func goChunked(b []byte) (data []byte, n int, err error) {
	g := newGoReader(b)
	data, err = io.ReadAll(httputil.NewChunkedReader(g.br))
	if err == nil {
		err = goTrailer(g.br)
	}
	return data, g.pos(), err
}

// goCloses is shouldClose of net/http (transfer.go) with Proxy-Connection read as
// Connection too: http1 deliberately takes that non-standard spelling, Go ignores it.
// With no Proxy-Connection header it is Go's own answer (the targets check that).
func goCloses(minor int, h http.Header) bool {
	vals := append(append([]string(nil), h["Connection"]...), h["Proxy-Connection"]...)
	hasClose := containsToken(vals, "close")
	if minor == 0 {
		return hasClose || !containsToken(vals, "keep-alive")
	}
	return hasClose
}

// rawHeader is the head's fields as net/http reads them, before ReadResponse deletes
// the Connection header it acted on.
func rawHeader(head []byte) http.Header {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	if _, err := tp.ReadLine(); err != nil {
		return nil
	}
	h, _ := tp.ReadMIMEHeader()
	return http.Header(h)
}

// containsToken is httpguts.HeaderValuesContainsToken.
func containsToken(vals []string, tok string) bool {
	for _, v := range vals {
		for _, t := range strings.Split(v, ",") {
			if asciiEqualFold(strings.Trim(t, " \t"), tok) {
				return true
			}
		}
	}
	return false
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
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

// ---- chunked coding -------------------------------------------------------------

type scanResult struct {
	n    int    // bytes of the message consumed
	data []byte // the data runs, in order
	done bool
	err  error
}

var errNoProgress = errors.New("no progress: Next consumed nothing, reported no error and is not done")

func (r scanResult) String() string {
	return fmt.Sprintf("n=%d done=%v err=%v data=%q", r.n, r.done, r.err, r.data)
}

// scanChunked runs ChunkScanner.Next over b as if it arrived in reads whose lengths
// cut chooses (nil: all at once), keeping the data runs.
func scanChunked(b []byte, cut func(left int) int) scanResult {
	var s http1.ChunkScanner
	var r scanResult
	for r.n < len(b) && !s.Done() {
		k := len(b) - r.n
		if cut != nil {
			k = max(1, min(k, cut(k)))
		}
		piece := b[r.n : r.n+k]
		for len(piece) > 0 && !s.Done() {
			m, isData, err := s.Next(piece)
			if m < 0 || m > len(piece) {
				r.err = fmt.Errorf("Next returned n=%d for %d bytes", m, len(piece))
				return r
			}
			if isData {
				r.data = append(r.data, piece[:m]...)
			}
			r.n += m
			piece = piece[m:]
			if err != nil {
				r.err = err
				return r
			}
			if m == 0 && !s.Done() {
				r.err = errNoProgress
				return r
			}
		}
	}
	r.done = s.Done()
	if r.done && r.n < len(b) {
		// Done stays done: nothing after the message is taken.
		if m, isData, err := s.Next(b[r.n:]); m != 0 || isData || err != nil {
			r.err = fmt.Errorf("Next after Done: n=%d data=%v err=%v", m, isData, err)
		}
	}
	return r
}

// randomCuts splits deterministically, from a hash of the input: mostly short reads
// (the state machine's edges), sometimes long ones.
func randomCuts(data []byte) func(int) int {
	h := fnv.New64a()
	h.Write(data)
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(len(data))))
	return func(left int) int {
		if rng.IntN(4) == 0 {
			return 1 + rng.IntN(left)
		}
		return 1 + rng.IntN(4)
	}
}

// rfcChunked is where RFC 9112 §7.1 says a chunked body ends, and its data, read line
// by line with CRLF only:
//
//	chunked-body = *chunk last-chunk trailer-section CRLF
//	chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//	last-chunk   = 1*("0") [ chunk-ext ] CRLF
//	chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//	trailer-section = *( field-line CRLF )
//
// It does not judge the extensions' and trailer fields' own syntax (that is compared
// with net/http); it only says where the message ends. ok is false if b does not hold
// a whole chunked body by these rules.
func rfcChunked(b []byte) (n int, data []byte, ok bool) {
	p := 0
	line := func() ([]byte, bool) {
		i := bytes.Index(b[p:], crlf)
		if i < 0 {
			return nil, false
		}
		l := b[p : p+i]
		p += i + 2
		return l, true
	}
	for {
		l, ok := line()
		if !ok {
			return 0, nil, false
		}
		j, size := 0, uint64(0)
		for ; j < len(l) && isHex(l[j]); j++ {
			if j == 16 {
				return 0, nil, false
			}
			size = size<<4 | uint64(unhex(l[j]))
		}
		if j == 0 {
			return 0, nil, false
		}
		if ext := bytes.TrimLeft(l[j:], " \t"); len(ext) > 0 && ext[0] != ';' {
			return 0, nil, false
		}
		if size == 0 {
			break
		}
		if size > uint64(len(b)-p) || uint64(len(b)-p)-size < 2 {
			return 0, nil, false
		}
		data = append(data, b[p:p+int(size)]...)
		p += int(size)
		if b[p] != '\r' || b[p+1] != '\n' {
			return 0, nil, false
		}
		p += 2
	}
	for {
		l, ok := line()
		if !ok {
			return 0, nil, false
		}
		if len(l) == 0 {
			return p, data, true
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
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

// goTrailer reads the trailer section as net/http's body.readTrailer does after the
// chunked reader's last chunk.
func goTrailer(br *bufio.Reader) error {
	buf, err := br.Peek(2)
	if bytes.Equal(buf, crlf) {
		br.Discard(2)
		return nil
	}
	if len(buf) < 2 {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	for size := 4; ; size++ { // seeUpcomingDoubleCRLF
		buf, err := br.Peek(size)
		if bytes.HasSuffix(buf, crlfcrlf) {
			break
		}
		if err != nil {
			return errors.New("http: suspiciously long trailer after chunked body")
		}
	}
	_, err = textproto.NewReader(br).ReadMIMEHeader()
	return err
}

// checkChunkedBody compares the scanner with net/http on a chunked body that starts at
// data[start:]: goBody is what reading Go's Body gave, goEnd where Go's reading ended.
func checkChunkedBody(c *checker, data []byte, start int, goBody []byte, goErr error, goEnd int) {
	sc := scanChunked(data[start:], nil)
	if sc.err == errNoProgress {
		c.fail("chunked body: %v", sc.err)
	}
	switch {
	case sc.done && sc.err == nil:
		if goErr != nil {
			c.fail("the scanner accepts a chunked body net/http refuses (%v): %s\nbody %q", goErr, sc, data[start:])
		}
		if !bytes.Equal(sc.data, goBody) {
			c.fail("chunked body: scanner data %q, net/http %q\nbody %q", sc.data, goBody, data[start:])
		}
		if start+sc.n != goEnd {
			c.fail("chunked body ends at %d for the scanner, %d for net/http\nbody %q", start+sc.n, goEnd, data[start:])
		}
	case sc.err == nil: // the input ended inside the body
		if goErr == nil {
			c.fail("net/http finds the end (at %d) of a chunked body the scanner is still inside: %s\nbody %q", goEnd, sc, data[start:])
		}
	}
}

// ---- requests -------------------------------------------------------------------

func reqSummary(head []byte, r *http1.Request) string {
	var keep, xff []string
	for _, s := range r.Keep {
		keep = append(keep, string(head[s.Start:s.End]))
	}
	for _, s := range r.XFF {
		xff = append(xff, string(head[s.Start:s.End]))
	}
	return fmt.Sprintf("method=%q target=%q path=%q host=%q minor=%d headlen=%d body=%d length=%d close=%v ka10=%v expect=%v upgrade=%q keep=%q xff=%q xfh=%q xfp=%q",
		r.Method, r.Target, r.Path, r.Host, r.Minor, r.HeadLen, r.Body, r.Length, r.Close, r.KeepAlive10, r.Expect100, r.Upgrade, keep, xff, r.XFH, r.XFP)
}

// dirty is a parse that fills every slice of a Request, to check ParseRequest leaves
// nothing of a previous message in a reused one.
var dirty = []byte("GET http://x.example/p?q HTTP/1.0\r\nHost: y\r\nConnection: keep-alive, X-A, Upgrade\r\nUpgrade: websocket\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n" +
	"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Host: h\r\nX-Forwarded-Proto: https\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n")

func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		end := bytes.Index(data, crlfcrlf)
		if end < 0 {
			return
		}
		head := data[:end+4]
		c := &checker{t: t, known: func() string { return knownRequest(data) }}

		var req http1.Request
		err := http1.ParseRequest(head, &req)
		reused := http1.Request{}
		if e := http1.ParseRequest(dirty, &reused); e != nil {
			t.Fatal(e)
		}
		if e := http1.ParseRequest(head, &reused); e != err {
			c.fail("a reused Request gives %v, a new one %v", e, err)
		}
		if err != nil {
			if _, ok := err.(*http1.Error); !ok {
				c.fail("ParseRequest: %T %v is not an *Error", err, err)
			}
			return // stricter than Go (or both refuse): not compared
		}
		if a, b := reqSummary(head, &req), reqSummary(head, &reused); a != b {
			c.fail("a reused Request parses differently:\n new    %s\n reused %s", a, b)
		}
		checkRequestShape(c, head, &req)

		// The reference: net/http reads the whole input, so the body follows the head.
		g := newGoReader(data)
		greq, gerr := http.ReadRequest(g.br)
		if gerr != nil {
			c.fail("http1 accepts a request net/http refuses (%v):\n%q", gerr, head)
		}
		if p := g.pos(); p != len(head) {
			c.fail("the head ends at %d for http1, %d for net/http:\n%q", len(head), p, data)
		}
		if greq.Method != string(req.Method) || greq.ProtoMajor != 1 || greq.ProtoMinor != int(req.Minor) {
			c.fail("request line: http1 %q HTTP/1.%d, net/http %q %s\n%q", req.Method, req.Minor, greq.Method, greq.Proto, head)
		}
		if greq.Host != string(req.Host) {
			c.fail("Host: http1 %q, net/http %q\n%q", req.Host, greq.Host, head)
		}
		checkRequestFraming(c, "", head, &req, greq)
		hdr := rawHeader(head)
		if cl := goCloses(int(req.Minor), hdr); req.Close != cl {
			c.fail("Close: http1 %v, net/http %v\n%q", req.Close, cl, head)
		} else if len(hdr["Proxy-Connection"]) == 0 && cl != greq.Close {
			t.Fatalf("the test's model of net/http's Close is wrong: %v, net/http %v\n%q", cl, greq.Close, head)
		}

		// The body's bytes.
		switch req.Body {
		case http1.Length:
			body, rerr := io.ReadAll(greq.Body)
			if int64(len(data)-len(head)) >= req.Length {
				want := data[len(head) : len(head)+int(req.Length)]
				if rerr != nil || !bytes.Equal(body, want) {
					c.fail("body: http1 %q, net/http %q (%v)", want, body, rerr)
				}
				if p := g.pos(); p != len(head)+int(req.Length) {
					c.fail("the body ends at %d for http1, %d for net/http:\n%q", len(head)+int(req.Length), p, data)
				}
			} else if rerr == nil {
				c.fail("net/http read a whole %d-byte body from %d bytes", req.Length, len(data)-len(head))
			}
		case http1.Chunked:
			body, rerr := io.ReadAll(greq.Body)
			checkChunkedBody(c, data, len(head), body, rerr, g.pos())
		}

		checkForwardedRequest(c, data, head, &req, greq)
	})
}

func checkRequestShape(c *checker, head []byte, req *http1.Request) {
	if req.HeadLen != len(head) {
		c.fail("HeadLen %d of a %d-byte head", req.HeadLen, len(head))
	}
	for _, s := range append(append([]http1.Span(nil), req.Keep...), req.XFF...) {
		if s.Start < 0 || s.Start > s.End || int(s.End) > len(head)-4 {
			c.fail("span %v outside the %d-byte head %q", s, len(head), head)
		}
	}
	switch req.Body {
	case http1.NoBody:
		if req.Length != 0 {
			c.fail("NoBody with Length %d", req.Length)
		}
	case http1.Length:
		if req.Length <= 0 {
			c.fail("Length body of %d bytes", req.Length)
		}
	case http1.Chunked:
		if req.Minor != 1 || req.Length != 0 {
			c.fail("chunked in HTTP/1.%d, Length %d", req.Minor, req.Length)
		}
	default:
		c.fail("a request's body framed %d", req.Body)
	}
	if req.KeepAlive10 && (req.Minor != 0 || req.Close) || req.Minor == 0 && !req.Close && !req.KeepAlive10 {
		c.fail("HTTP/1.%d close=%v keepalive10=%v", req.Minor, req.Close, req.KeepAlive10)
	}
	if req.Expect100 && req.Body == http1.NoBody {
		c.fail("Expect100 without a body")
	}
}

// checkRequestFraming: http1's Body/Length against Go's ContentLength/TransferEncoding.
func checkRequestFraming(c *checker, what string, head []byte, req *http1.Request, greq *http.Request) {
	te := strings.Join(greq.TransferEncoding, ",")
	ok := false
	switch req.Body {
	case http1.NoBody:
		ok = greq.ContentLength == 0 && te == "" && greq.Body == http.NoBody
	case http1.Length:
		ok = greq.ContentLength == req.Length && te == ""
	case http1.Chunked:
		ok = greq.ContentLength == -1 && te == "chunked"
	}
	if !ok {
		c.fail("%sframing: http1 body=%d length=%d, net/http ContentLength=%d TransferEncoding=%q\n%q", what, req.Body, req.Length, greq.ContentLength, greq.TransferEncoding, head)
	}
}

const clientIP = "192.0.2.7"

// checkForwardedRequest: the head the gateway forwards is a request net/http reads as
// the same request (method, Host, target, framing) with one X-Forwarded-For ending in
// the client's address, and one http1 itself accepts the same way.
func checkForwardedRequest(c *checker, data, head []byte, req *http1.Request, greq *http.Request) {
	fwd := http1.Forwarded{ClientIP: []byte(clientIP), Proto: "https", Trust: len(data)%2 == 1}
	upgrade := len(req.Upgrade) > 0
	out := http1.AppendRequestHead(nil, head, req, fwd, upgrade)
	if bytes.Index(out, crlfcrlf) != len(out)-4 {
		c.fail("forwarded head does not end at its first blank line:\n%q\nfrom %q", out, head)
	}
	freq, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
	if err != nil {
		c.fail("net/http refuses the forwarded head (%v):\n%q\nfrom %q", err, out, head)
	}
	wantURI := string(req.Path)
	if wantURI == "" || wantURI[0] == '?' {
		wantURI = "/" + wantURI
	}
	if want := wantForwardedRequest(head, req, fwd, upgrade, wantURI); string(out) != want {
		c.fail("forwarded head\n %q\nwant\n %q\nfrom %q", out, want, head)
	}
	gpath := greq.URL.Path
	if gpath == "" {
		gpath = "/"
	}
	if freq.Method != greq.Method || freq.Host != greq.Host || freq.Host != string(req.Host) || freq.RequestURI != wantURI ||
		freq.URL.Path != gpath || freq.URL.RawQuery != greq.URL.RawQuery || freq.ProtoMinor != 1 {
		c.fail("forwarded: %q %q (path %q query %q) Host %q HTTP/1.%d; the request: %q %q (path %q query %q) Host %q\n%q\nfrom %q",
			freq.Method, freq.RequestURI, freq.URL.Path, freq.URL.RawQuery, freq.Host, freq.ProtoMinor,
			greq.Method, wantURI, gpath, greq.URL.RawQuery, greq.Host, out, head)
	}
	checkRequestFraming(c, "forwarded ", out, req, freq)
	var xff []string
	for _, v := range greq.Header["X-Forwarded-For"] {
		if v != "" {
			xff = append(xff, v)
		}
	}
	want := strings.Join(append(xff, clientIP), ", ")
	if got := freq.Header["X-Forwarded-For"]; len(got) != 1 || got[0] != want || !strings.HasSuffix(got[0], clientIP) {
		c.fail("forwarded X-Forwarded-For %q, want [%q]\n%q\nfrom %q", got, want, out, head)
	}
	if upgrade && (!containsToken(freq.Header["Connection"], "upgrade") || freq.Header.Get("Upgrade") != string(req.Upgrade)) {
		c.fail("forwarded upgrade: Connection %q Upgrade %q, want %q\n%q", freq.Header["Connection"], freq.Header["Upgrade"], req.Upgrade, out)
	}

	var again http1.Request
	if err := http1.ParseRequest(out, &again); err != nil {
		c.fail("http1 refuses its own forwarded head (%v):\n%q\nfrom %q", err, out, head)
	}
	if string(again.Method) != string(req.Method) || string(again.Host) != string(req.Host) || string(again.Path) != wantURI ||
		again.Body != req.Body || again.Length != req.Length || string(again.Upgrade) != string(req.Upgrade) && upgrade {
		c.fail("http1 reads its forwarded head as\n %s\nnot\n %s\n%q", reqSummary(out, &again), reqSummary(head, req), out)
	}
}

// ---- responses ------------------------------------------------------------------

func respSummary(head []byte, r *http1.Response) string {
	var drop []string
	for _, s := range r.Drop {
		drop = append(drop, string(head[s.Start:s.End]))
	}
	return fmt.Sprintf("status=%d minor=%d headlen=%d body=%d length=%d close=%v drop=%q", r.Status, r.Minor, r.HeadLen, r.Body, r.Length, r.Close, drop)
}

var dirtyResp = []byte("HTTP/1.1 200 OK\r\nConnection: X-A, keep-alive\r\nX-A: 1\r\nKeep-Alive: 5\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nUpgrade: x\r\n\r\n")

func FuzzParseResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	for _, s := range getSeeds {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, headReq bool) {
		method := "GET"
		if headReq {
			method = "HEAD"
		}
		end := bytes.Index(data, crlfcrlf)
		if end < 0 {
			return
		}
		head := data[:end+4]
		c := &checker{t: t, known: func() string { return knownResponse(data, headReq) }}

		var resp http1.Response
		err := http1.ParseResponse(head, []byte(method), &resp)
		var reused http1.Response
		if e := http1.ParseResponse(dirtyResp, []byte("GET"), &reused); e != nil {
			t.Fatal(e)
		}
		if e := http1.ParseResponse(head, []byte(method), &reused); e != err {
			c.fail("a reused Response gives %v, a new one %v", e, err)
		}
		if err != nil {
			if err != http1.ErrUpstream {
				c.fail("ParseResponse: %v is not ErrUpstream", err)
			}
			return // stricter than Go (or both refuse): not compared
		}
		if a, b := respSummary(head, &resp), respSummary(head, &reused); a != b {
			c.fail("a reused Response parses differently:\n new    %s\n reused %s", a, b)
		}
		lines := checkResponseShape(c, head, &resp)

		g := newGoReader(data)
		gresp, gerr := http.ReadResponse(g.br, &http.Request{Method: method})
		if gerr != nil {
			c.fail("http1 accepts a response net/http refuses (%v) to %s:\n%q", gerr, method, head)
		}
		if gresp.StatusCode != resp.Status || gresp.ProtoMajor != 1 || gresp.ProtoMinor != int(resp.Minor) {
			c.fail("status line: http1 HTTP/1.%d %d, net/http %s %d\n%q", resp.Minor, resp.Status, gresp.Proto, gresp.StatusCode, head)
		}
		if p := g.pos(); p != len(head) {
			c.fail("the head ends at %d for http1, %d for net/http:\n%q", len(head), p, data)
		}
		if resp.Status < 200 {
			return // 1xx (101 too): the callers deal with them; both agree it is one
		}
		checkResponseFraming(c, "", head, method, &resp, gresp)
		hdr := rawHeader(head)
		if cl := goCloses(int(resp.Minor), hdr) || resp.Body == http1.UntilClose; cl && !resp.Close {
			c.fail("http1 keeps a connection net/http closes\n%q", head)
		} else if len(hdr["Proxy-Connection"]) == 0 && cl != gresp.Close {
			t.Fatalf("the test's model of net/http's Close is wrong: %v, net/http %v\n%q", cl, gresp.Close, head)
		}

		switch resp.Body {
		case http1.Length:
			body, rerr := io.ReadAll(gresp.Body)
			if int64(len(data)-len(head)) >= resp.Length {
				want := data[len(head) : len(head)+int(resp.Length)]
				if rerr != nil || !bytes.Equal(body, want) {
					c.fail("body: http1 %q, net/http %q (%v)", want, body, rerr)
				}
				if p := g.pos(); p != len(head)+int(resp.Length) {
					c.fail("the body ends at %d for http1, %d for net/http:\n%q", len(head)+int(resp.Length), p, data)
				}
			} else if rerr == nil {
				c.fail("net/http read a whole %d-byte body from %d bytes", resp.Length, len(data)-len(head))
			}
		case http1.Chunked:
			body, rerr := io.ReadAll(gresp.Body)
			checkChunkedBody(c, data, len(head), body, rerr, g.pos())
		case http1.UntilClose:
			body, rerr := io.ReadAll(gresp.Body)
			if rerr != nil || !bytes.Equal(body, data[len(head):]) {
				c.fail("close-delimited body: net/http %q (%v), want %q", body, rerr, data[len(head):])
			}
		}

		checkForwardedResponse(c, head, method, lines, &resp)
	})
}

// checkResponseShape checks the Response against its head and returns the head's
// field lines (as spans, in order).
func checkResponseShape(c *checker, head []byte, resp *http1.Response) []http1.Span {
	if resp.HeadLen != len(head) {
		c.fail("HeadLen %d of a %d-byte head", resp.HeadLen, len(head))
	}
	var lines []http1.Span
	first := bytes.Index(head, crlf)
	for off := first + 2; off < len(head)-2; {
		e := bytes.Index(head[off:], crlf)
		lines = append(lines, http1.Span{Start: int32(off), End: int32(off + e)})
		off += e + 2
	}
	for _, d := range resp.Drop {
		found := false
		for _, l := range lines {
			found = found || l == d
		}
		if !found {
			c.fail("Drop span %v is not a field line of %q", d, head)
		}
	}
	switch resp.Body {
	case http1.NoBody:
		if resp.Length != 0 {
			c.fail("NoBody with Length %d", resp.Length)
		}
	case http1.Length:
		if resp.Length <= 0 {
			c.fail("Length body of %d bytes", resp.Length)
		}
	case http1.Chunked:
		if resp.Minor != 1 || resp.Length != 0 {
			c.fail("chunked in HTTP/1.%d, Length %d", resp.Minor, resp.Length)
		}
	case http1.UntilClose:
		if !resp.Close || resp.Length != 0 {
			c.fail("UntilClose with close=%v Length %d", resp.Close, resp.Length)
		}
	default:
		c.fail("a response's body framed %d", resp.Body)
	}
	return lines
}

// noBody: the responses that never have a body (RFC 9110 §6.4.1; net/http's
// noResponseBodyExpected and bodyAllowedForStatus).
func noBody(method string, status int) bool {
	return method == "HEAD" || status < 200 || status == 204 || status == 304
}

// checkResponseFraming: http1's Body/Length against Go's ContentLength/TransferEncoding
// and Body.
func checkResponseFraming(c *checker, what string, head []byte, method string, resp *http1.Response, gresp *http.Response) {
	te := strings.Join(gresp.TransferEncoding, ",")
	ok := false
	switch {
	case noBody(method, resp.Status):
		// net/http reports the announced length (HEAD) or 0, but never reads a body.
		ok = resp.Body == http1.NoBody && gresp.Body == http.NoBody
	case resp.Body == http1.NoBody:
		ok = gresp.ContentLength == 0 && te == "" && gresp.Body == http.NoBody
	case resp.Body == http1.Length:
		ok = gresp.ContentLength == resp.Length && te == ""
	case resp.Body == http1.Chunked:
		ok = gresp.ContentLength == -1 && te == "chunked"
	case resp.Body == http1.UntilClose:
		ok = gresp.ContentLength == -1 && te == "" && gresp.Close
	}
	if !ok {
		c.fail("%sframing of a %d to %s: http1 body=%d length=%d, net/http ContentLength=%d TransferEncoding=%q NoBody=%v\n%q",
			what, resp.Status, method, resp.Body, resp.Length, gresp.ContentLength, gresp.TransferEncoding, gresp.Body == http.NoBody, head)
	}
}

// checkForwardedResponse: the head relayed to the client is the status line as
// HTTP/1.1, exactly the field lines not dropped, then Connection: close if closing;
// net/http and http1 read it with the same status and framing; and it never has both
// Content-Length and Transfer-Encoding (RFC 9112 §6.2: a sender MUST NOT).
func checkForwardedResponse(c *checker, head []byte, method string, lines []http1.Span, resp *http1.Response) {
	out := http1.AppendResponseHead(nil, head, resp, resp.Close, false)
	want := append([]byte("HTTP/1.1"), head[8:bytes.Index(head, crlf)+2]...)
	var hasCL, hasTE bool
	var dropped []int
	for i, l := range lines {
		if slices.Contains(resp.Drop, l) {
			dropped = append(dropped, i)
			continue
		}
		line := head[l.Start:l.End]
		want = append(append(want, line...), crlf...)
		name, _, _ := bytes.Cut(line, []byte(":"))
		hasCL = hasCL || asciiEqualFold(string(name), "Content-Length")
		hasTE = hasTE || asciiEqualFold(string(name), "Transfer-Encoding")
	}
	if resp.Close {
		want = append(want, "Connection: close\r\n"...)
	}
	want = append(want, crlf...)
	if !bytes.Equal(out, want) {
		c.fail("forwarded head\n %q\nwant\n %q\nfrom %q (%s)", out, want, head, respSummary(head, resp))
	}
	if w := wantDropped(head, resp); !slices.Equal(dropped, w) {
		c.fail("dropped lines %v, want %v (RFC 9110 §7.6.1)\n%q", dropped, w, head)
	}
	if hasCL && hasTE {
		c.fail("forwarded head has both Content-Length and Transfer-Encoding:\n%q\nfrom %q", out, head)
	}
	fresp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), &http.Request{Method: method})
	if err != nil {
		c.fail("net/http refuses the forwarded head (%v):\n%q\nfrom %q", err, out, head)
	}
	if fresp.StatusCode != resp.Status {
		c.fail("forwarded status %d, not %d", fresp.StatusCode, resp.Status)
	}
	checkResponseFraming(c, "forwarded ", out, method, resp, fresp)
	var again http1.Response
	if err := http1.ParseResponse(out, []byte(method), &again); err != nil {
		c.fail("http1 refuses its own forwarded head (%v):\n%q", err, out)
	}
	if again.Status != resp.Status || again.Body != resp.Body || again.Length != resp.Length || resp.Close && !again.Close {
		c.fail("http1 reads its forwarded head as %s, not %s\n%q", respSummary(out, &again), respSummary(head, resp), out)
	}
}

// ---- hop-by-hop fields --------------------------------------------------------------

// hopByHop are the fields a proxy does not forward (RFC 9110 §7.6.1), with
// Proxy-Connection (an old spelling of Connection) and the proxy-authentication pair
// (they are for this hop); lower case.
var hopByHop = map[string]bool{"connection": true, "proxy-connection": true, "keep-alive": true, "te": true,
	"trailer": true, "upgrade": true, "proxy-authenticate": true, "proxy-authorization": true}

// framingField: fields kept though a Connection option names them, because the gateway
// relays the message with the framing they declare (the package's rule).
var framingField = map[string]bool{"content-length": true, "transfer-encoding": true, "host": true}

// connectionNamed are the names the Connection (and Proxy-Connection) options list: the
// fields of those names are hop-by-hop too (RFC 9110 §7.6.1).
func connectionNamed(fs []field) map[string]bool {
	m := map[string]bool{}
	for _, f := range fs {
		if f.name == "connection" || f.name == "proxy-connection" {
			for _, t := range strings.Split(f.value, ",") {
				m[strings.ToLower(strings.Trim(t, " \t"))] = true
			}
		}
	}
	return m
}

// wantForwardedRequest is the head AppendRequestHead documents, built independently
// from the head's lines: the origin-form request line in HTTP/1.1, Host, every line but
// Host, the hop-by-hop ones, those Connection names (framing excepted), Expect,
// HTTP2-Settings and X-Forwarded-*; then X-Forwarded-For (every non-empty client value
// in order, then the client's address), -Proto and -Host (the first client line's
// value if trusted and non-empty, else the gateway's), the upgrade, the blank line.
func wantForwardedRequest(head []byte, req *http1.Request, fwd http1.Forwarded, upgrade bool, uri string) string {
	_, fs := fields(head)
	named := connectionNamed(fs)
	var b strings.Builder
	b.WriteString(string(req.Method) + " " + uri + " HTTP/1.1\r\nHost: " + string(req.Host) + "\r\n")
	var xff []string
	var xfh, xfp *string
	for _, f := range fs {
		switch f.name {
		case "x-forwarded-for":
			if f.value != "" {
				xff = append(xff, f.value)
			}
			continue
		case "x-forwarded-host":
			if xfh == nil {
				xfh = &f.value
			}
			continue
		case "x-forwarded-proto":
			if xfp == nil {
				xfp = &f.value
			}
			continue
		case "host", "expect", "http2-settings":
			continue
		}
		if hopByHop[f.name] || named[f.name] && !framingField[f.name] {
			continue
		}
		b.WriteString(f.line + "\r\n")
	}
	proto, host := fwd.Proto, string(req.Host)
	if fwd.Trust && xfp != nil && *xfp != "" {
		proto = *xfp
	}
	if fwd.Trust && xfh != nil && *xfh != "" {
		host = *xfh
	}
	b.WriteString("X-Forwarded-For: " + strings.Join(append(xff, string(fwd.ClientIP)), ", ") + "\r\n")
	b.WriteString("X-Forwarded-Proto: " + proto + "\r\nX-Forwarded-Host: " + host + "\r\n")
	if upgrade {
		b.WriteString("Connection: Upgrade\r\nUpgrade: " + string(req.Upgrade) + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// wantDropped are the indexes of the response's field lines not to relay: hop-by-hop
// ones (a 101's Upgrade excepted), those Connection names (framing excepted), and
// Content-Length beside Transfer-Encoding, with or without a body (RFC 9112 §6.2: a
// sender MUST NOT send both).
func wantDropped(head []byte, resp *http1.Response) []int {
	_, fs := fields(head)
	named := connectionNamed(fs)
	var d []int
	for i, f := range fs {
		if hopByHop[f.name] && (resp.Status != 101 || f.name != "upgrade") ||
			named[f.name] && !framingField[f.name] ||
			hasField(fs, "transfer-encoding") && f.name == "content-length" {
			d = append(d, i)
		}
	}
	return d
}

func hasField(fs []field, name string) bool {
	for _, f := range fs {
		if f.name == name {
			return true
		}
	}
	return false
}

// ---- the chunked coding alone ---------------------------------------------------

func FuzzChunked(f *testing.F) {
	for _, s := range chunkedSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkChunked)
}

// TestFuzzChunkedLimits runs FuzzChunked's property on the two inputs of the go-limit
// discrepancy. They are 4-5 KiB, so they are not in the fuzzing corpus: there the
// fuzzer would spend its time minimizing their mutations.
func TestFuzzChunkedLimits(t *testing.T) {
	var trailer strings.Builder
	for i := range 50 {
		fmt.Fprintf(&trailer, "X-T%d: %s\r\n", i, strings.Repeat("v", 100))
	}
	for name, data := range map[string]string{
		"extension": "1;" + strings.Repeat("a", 4094) + "\r\nx\r\n0\r\n\r\n", // a 4096-byte chunk line
		"trailer":   "0\r\n" + trailer.String() + "\r\n",                     // a 5.4 KiB trailer section
	} {
		t.Run(name, func(t *testing.T) { checkChunked(t, []byte(data)) })
	}
}

// checkChunked is FuzzChunked's property.
func checkChunked(t *testing.T, data []byte) {
	c := &checker{t: t, known: func() string { return knownChunked(data) }}
	whole := scanChunked(data, nil)
	if whole.err == errNoProgress {
		c.fail("%v: %q", whole.err, data)
	}
	// The same message, however it arrives.
	for _, split := range []struct {
		name string
		cut  func(int) int
	}{
		{"byte by byte", func(int) int { return 1 }},
		{"random reads", randomCuts(data)},
	} {
		r := scanChunked(data, split.cut)
		if r.n != whole.n || r.done != whole.done || (r.err == nil) != (whole.err == nil) || !bytes.Equal(r.data, whole.data) {
			c.fail("%s: %s\nat once: %s\ninput %q", split.name, r, whole, data)
		}
	}
	var s http1.ChunkScanner
	if n, err := s.Scan(data); n != whole.n || (err == nil) != (whole.err == nil) || s.Done() != whole.done {
		c.fail("Scan: n=%d err=%v done=%v; Next: %s\ninput %q", n, err, s.Done(), whole, data)
	}
	if whole.err != nil {
		return // stricter than Go (or both refuse): not compared
	}

	// RFC 9112 §7.1: where the message ends, and its data.
	n, rdata, ok := rfcChunked(data)
	if whole.done && (!ok || n != whole.n || !bytes.Equal(rdata, whole.data)) {
		c.fail("the scanner: %s\nRFC 9112: n=%d ok=%v data=%q\ninput %q", whole, n, ok, rdata, data)
	}
	if !whole.done && ok {
		c.fail("the scanner is still inside a body that RFC 9112 ends at %d\ninput %q", n, data)
	}

	// net/http/httputil's chunked reader stops after the last chunk's line; net/http
	// then reads the trailer section (body.readTrailer).
	body, gn, gerr := goChunked(data)
	if whole.done {
		if gerr != nil {
			c.fail("the scanner accepts what net/http refuses (%v): %s\ninput %q", gerr, whole, data)
		}
		if !bytes.Equal(body, whole.data) || gn != whole.n {
			c.fail("the scanner: %s\nnet/http: n=%d data=%q\ninput %q", whole, gn, body, data)
		}
	} else if gerr == nil {
		c.fail("net/http ends at %d a body the scanner is still inside: %s\ninput %q", gn, whole, data)
	}
}

// ---- the discrepancies reported ---------------------------------------------------

// Each reported discrepancy, by name, with the test that recognizes its inputs. They
// are asked only once a property has failed, to say which report the failure belongs
// to; see the file comment.
//
//	te-fold:         a Transfer-Encoding value with bytes >= 0x80 that http1 takes for
//	                 "chunked": bytes.EqualFold folds U+212A KELVIN SIGN to 'k', so
//	                 "chun\u212aed" is chunked to http1, an unknown coding to Go (and to
//	                 any ASCII-only parser). Smuggling: http1 frames by chunked and forwards
//	                 the line unchanged.
//	target:          a request-target net/url refuses (a bad %-escape, an authority with
//	                 a non-numeric port or several colons, ...) or whose authority it
//	                 decodes to another host ("http://a%c3%a9/" is host "aé").
//	chunk-bws:       whitespace between a chunk size and ';' ("5 ;x"): RFC 9112's BWS,
//	                 refused by net/http's chunked reader.
//	trailer-decl:    a chunked message whose Trailer header names Content-Length,
//	                 Transfer-Encoding or Trailer: net/http refuses it.
//	resp-te:         a response Transfer-Encoding other than one "chunked" line ("gzip,
//	                 chunked", "chunked, chunked", two lines, "identity", "gzip"):
//	                 RFC 9112 §6.3 frames them (chunked last: chunked; else until close),
//	                 net/http refuses them.
//	resp-cl-beside-te: an invalid or conflicting Content-Length beside Transfer-Encoding:
//	                 http1 lets chunked override it, net/http (1.26) refuses it.
//	resp-cl-spelling: Content-Length lines of one number spelled differently ("5",
//	                 "05"): http1 compares numbers, net/http compares text and refuses.
//	go-limit:        a chunked body net/http refuses for its size limits alone: a chunk
//	                 line (size and extensions) of 4096 bytes or more (http1 bounds the
//	                 extension, not the line, at 4096, so takes ~2 bytes more); a trailer
//	                 section over its 4 KiB read buffer (http1 bounds each line, not the
//	                 section); more than 16 KiB of extensions beyond 16 bytes a chunk.
//	no-body-cl-te:   a HEAD, 204 or 304 response with Content-Length and
//	                 Transfer-Encoding is relayed with both (RFC 9112 §6.2: a sender MUST
//	                 NOT); http1 drops Content-Length beside chunked only when a body follows.

// field is a field line: its name in lower case, its value without OWS, the line.
type field struct{ name, value, line string }

// fields are the field lines of a head http1 accepted (CRLF lines, name ":" value).
func fields(head []byte) (first string, fs []field) {
	lines := strings.Split(strings.TrimSuffix(string(head), "\r\n\r\n"), "\r\n")
	for _, l := range lines[1:] {
		n, v, _ := strings.Cut(l, ":")
		fs = append(fs, field{strings.ToLower(n), strings.Trim(v, " \t"), l})
	}
	return lines[0], fs
}

func values(fs []field, name string) (vs []string) {
	for _, f := range fs {
		if f.name == name {
			vs = append(vs, f.value)
		}
	}
	return vs
}

var chunkBWS = regexp.MustCompile(`(^|\n)[0-9A-Fa-f]+[ \t]+;`)

func teFold(fs []field) bool {
	for _, v := range values(fs, "transfer-encoding") {
		for i := 0; i < len(v); i++ {
			if v[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}

func trailerDecl(fs []field) bool {
	for _, v := range values(fs, "trailer") {
		for _, k := range strings.Split(v, ",") {
			switch http.CanonicalHeaderKey(strings.Trim(k, " \t")) {
			case "Content-Length", "Transfer-Encoding", "Trailer":
				return true
			}
		}
	}
	return false
}

// knownRequest names the reported discrepancy a request input shows, if any.
func knownRequest(data []byte) string {
	end := bytes.Index(data, crlfcrlf)
	head := data[:end+4]
	line, fs := fields(head)
	var target string
	if parts := strings.Split(line, " "); len(parts) == 3 {
		target = parts[1]
	}
	switch {
	case teFold(fs):
		return "te-fold"
	case target != "" && target != "*":
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return "target"
		}
		if target[0] != '/' {
			auth := target[strings.Index(target, "//")+2:]
			if i := strings.IndexAny(auth, "/?"); i >= 0 {
				auth = auth[:i]
			}
			if u.Host != auth {
				return "target"
			}
		}
	}
	return knownBody(data[end+4:], fs)
}

func knownBody(body []byte, fs []field) string {
	switch _, _, err := goChunked(body); {
	case chunkBWS.Match(body):
		return "chunk-bws"
	case goLimit(err):
		return "go-limit"
	case trailerDecl(fs):
		return "trailer-decl"
	}
	return ""
}

func knownResponse(data []byte, headReq bool) string {
	end := bytes.Index(data, crlfcrlf)
	head := data[:end+4]
	line, fs := fields(head)
	tes, cls := values(fs, "transfer-encoding"), values(fs, "content-length")
	status := 0
	if len(line) >= 12 {
		fmt.Sscanf(line[9:12], "%d", &status)
	}
	switch {
	case teFold(fs):
		return "te-fold"
	case len(tes) > 1 || len(tes) == 1 && !asciiEqualFold(tes[0], "chunked"):
		return "resp-te"
	}
	if len(tes) > 0 && len(cls) > 0 {
		for _, v := range cls {
			if v != cls[0] || strings.Trim(v, "0123456789") != "" || v == "" {
				return "resp-cl-beside-te"
			}
		}
		if noBody(map[bool]string{true: "HEAD", false: "GET"}[headReq], status) {
			return "no-body-cl-te"
		}
	}
	for _, v := range cls {
		if v != cls[0] {
			return "resp-cl-spelling"
		}
	}
	return knownBody(data[end+4:], fs)
}

func knownChunked(data []byte) string {
	return knownBody(data, nil)
}

// ---- seed corpora ---------------------------------------------------------------

const sh = "Host: a.default.example.com\r\n"

var requestSeeds = []string{
	// every shape http1 takes
	"GET / HTTP/1.1\r\n" + sh + "\r\n",
	"GET /x/y?z=1&w HTTP/1.1\r\n" + sh + "User-Agent: t\r\nAccept: */*\r\n\r\n",
	"HEAD / HTTP/1.1\r\n" + sh + "\r\n",
	"DELETE /r HTTP/1.1\r\n" + sh + "Content-Length: 0\r\n\r\n",
	"POST /p HTTP/1.1\r\n" + sh + "Content-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"POST /p HTTP/1.1\r\n" + sh + "Content-Length: 5\r\n\r\nhel",                                       // short body
	"POST /p HTTP/1.1\r\n" + sh + "Content-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n" + sh + "\r\n", // pipelined
	"POST /p HTTP/1.1\r\n" + sh + "Content-Length: 007\r\n\r\n1234567",
	"PUT /c HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"PUT /c HTTP/1.1\r\n" + sh + "Transfer-Encoding: CHUNKED\r\n\r\n3;a=b;c=\"d e\"\r\nabc\r\nA\r\n0123456789\r\n0;x\r\n\r\n",
	"PUT /c HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\nX-U:  2 \r\n\r\n",
	"PUT /c HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nGET /next HTTP/1.1\r\n" + sh + "\r\n", // pipelined
	"PUT /c HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",                                              // body cut short
	"PUT /c HTTP/1.1\r\n" + sh + "Transfer-Encoding:  chunked \t\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Expect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
	"GET / HTTP/1.0\r\n" + sh + "\r\n",
	"GET / HTTP/1.0\r\n" + sh + "Connection: keep-alive\r\n\r\n",
	"GET / HTTP/1.0\r\n" + sh + "Connection: keep-alive, close\r\n\r\n",
	"GET / HTTP/1.0\r\n" + sh + "Proxy-Connection: keep-alive\r\n\r\n",
	"POST / HTTP/1.0\r\n" + sh + "Content-Length: 2\r\n\r\nhi",
	"GET / HTTP/1.1\r\n" + sh + "Connection: close\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "Proxy-Connection: close\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "Connection: X-Private, keep-alive\r\nX-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: b\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "Connection: Content-Length\r\nContent-Length: 1\r\n\r\nx",
	"GET /ws HTTP/1.1\r\n" + sh + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For:2.2.2.2 , 3.3.3.3\r\nX-Forwarded-For:\r\nX-Forwarded-Host: h\r\nX-Forwarded-Proto: https\r\n\r\n",
	"GET / HTTP/1.1\r\nhost: a.default.example.com:8080\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\n" + sh + "\r\n",
	"GET /\x80\xff HTTP/1.1\r\n" + sh + "X: \x80\xff\r\n\r\n",
	// absolute-form
	"GET http://b.default.localhost/x?q HTTP/1.1\r\nHost: evil.example\r\n\r\n",
	"GET HTTP://b.default.localhost HTTP/1.1\r\n" + sh + "\r\n",
	"GET https://b.default.localhost:8443?x=1 HTTP/1.1\r\n" + sh + "\r\n",
	"GET http://[::1]:80/p HTTP/1.1\r\n" + sh + "\r\n",
	"GET http://b.default.localhost/ HTTP/1.0\r\n" + sh + "\r\n",
	// refused: userinfo, host and target forms
	"GET http://u:p@b.default.localhost/ HTTP/1.1\r\n" + sh + "\r\n",
	"GET / HTTP/1.1\r\nHost: u@b.default.localhost\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + sh + "\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET http:/// HTTP/1.1\r\n" + sh + "\r\n",
	"GET ftp://a/ HTTP/1.1\r\n" + sh + "\r\n",
	"GET * HTTP/1.1\r\n" + sh + "\r\n",
	"CONNECT a:443 HTTP/1.1\r\n" + sh + "\r\n",
	"GET / HTTP/1.2\r\n" + sh + "\r\n",
	"GET / HTTP/2.0\r\n" + sh + "\r\n",
	"GET / http/1.1\r\n" + sh + "\r\n",
	"GET  / HTTP/1.1\r\n" + sh + "\r\n",
	"GET / HTTP/1.1 \r\n" + sh + "\r\n",
	"G@T / HTTP/1.1\r\n" + sh + "\r\n",
	"GET /a\x00b HTTP/1.1\r\n" + sh + "\r\n",
	// smuggling classics: framing
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 4, 4\r\n\r\nabcd",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: +4\r\n\r\nabcd",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 0x4\r\n\r\nabcd",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 4 4\r\n\r\nabcd",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length:\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 99999999999999999999\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length : 4\r\n\r\nabcd",
	"POST / HTTP/1.1\r\n" + sh + " Content-Length: 4\r\n\r\nabcd",
	"POST / HTTP/1.0\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: identity\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n0\r\nX a\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Transfer-Encoding: chunked\r\n\r\n-1\r\n",
	// obs-fold, bare LF/CR, NUL, controls
	"GET / HTTP/1.1\r\n" + sh + "X: a\r\n b\r\n\r\n",
	"POST / HTTP/1.1\r\n" + sh + "Content-Length: 4\r\n Transfer-Encoding: chunked\r\n\r\nabcd",
	"GET / HTTP/1.1\n" + sh + "\r\n",
	"GET / HTTP/1.1\r\nHost: a\nContent-Length: 3\r\n\r\nabc",
	"GET / HTTP/1.1\r\nHost: a\rContent-Length: 3\r\n\r\nabc",
	"GET / HTTP/1.1\r\n" + sh + "X: a\x00b\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "X: a\x7fb\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "Bad Name: x\r\n\r\n",
	"GET / HTTP/1.1\r\n" + sh + "Expect: 200-ok\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\n" + sh + "\r\n",
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nh",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 599 Whatever \x80\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nT: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi",
	"HTTP/1.1 200 OK\r\n\r\nuntil the end",
	"HTTP/1.0 200 OK\r\n\r\nuntil the end",
	"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.0 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Keep: 1\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: TE, Upgrade, X\r\nTE: x\r\nUpgrade: y\r\nProxy-Authenticate: z\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: x\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	// refused or disputed
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
	"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nxx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	"HTTP/1.1 2x0 OK\r\n\r\n",
	"HTTP/1.1 +20 OK\r\n\r\n",
	"HTTP/1.1 099 Low\r\n\r\n",
	"HTTP/1.1  200 OK\r\n\r\n",
	"HTTP/1.1 200\tOK\r\n\r\n",
	"HTTP/1.2 200 OK\r\n\r\n",
	"HTTP/2 200 OK\r\n\r\n",
	"SSH-2.0\r\n\r\n",
	"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\nb\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n Transfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
}

// getSeeds are responses to GET only: to HEAD they show a reported discrepancy.
var getSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
}

var chunkedSeeds = []string{
	"0\r\n\r\n",
	"5\r\nhello\r\n0\r\n\r\n",
	"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
	"5;a=\"b c\";d\r\nhello\r\n0;e\r\n\r\n",
	"5\t\r\nhello\r\n000\r\n\r\n",
	"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n",
	"3\r\nabc\r\n0\r\nX:\r\n\r\nNEXT",
	"1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n",
	"10\r\n0123456789abcdef\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
	"3\r\nabc\r\n",
	"3\r\nabc\r\n0\r\nX: 1\r\n",
	"x\r\n",
	"\r\n",
	"5\r\nhelloX\r\n",
	"5\nhello\n0\n\n",
	"5\r\nhello\n0\r\n\r\n",
	"0\r\n\rX",
	"1234567890abcdef0\r\n",
	"fffffffffffffff\r\n",
	"5;a\nb\r\nhello\r\n0\r\n\r\n",
	"5;a\rb\r\nhello\r\n0\r\n\r\n",
	"0\r\nBad Trailer: 1\r\n\r\n",
	"0\r\nX: a\x00\r\n\r\n",
	"0\r\nX: 1\n\r\n",
	"0\r\nX: 1\r\n folded\r\n\r\n",
	"0\r\n: empty name\r\n\r\n",
	" 5\r\nhello\r\n0\r\n\r\n",
	"5 x\r\nhello\r\n0\r\n\r\n",
	"+5\r\nhello\r\n0\r\n\r\n",
	"0x5\r\nhello\r\n0\r\n\r\n",
}
