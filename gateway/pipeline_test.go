package gateway_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rouse-run/rouse/gateway"
)

// Fuzzed pipelines through a real gateway in front of the recording backend of
// desync_test.go.
//
// FuzzPipeline: the input bytes become 1–12 valid requests (methods, ids in the path,
// random, hop-by-hop and X-Forwarded-* headers, no body / Content-Length bodies up to
// 20 000 bytes / chunked bodies with extensions and trailers, Expect: 100-continue),
// written back to back on one client connection in random splits and pauses, then the
// client's half of the connection is closed. Each request must reach the instance exactly
// once, in order, with exactly the documented rewrites (docs/gateway.md, "HTTP/1.1
// rules"); the client must get exactly one response per request, in order, each its own
// (the instance varies its framing: Content-Length, chunked, 204, 304, 1xx first,
// hop-by-hop headers), then the close and nothing else; and the access log must have one
// line per request with its host, method, target and status.
//
// FuzzPipelineHostile: the same pipelines, then bytes of heads and chunk framing
// flipped, inserted and deleted. Net/http is the judge (refParse): the instance may only
// receive (modulo the documented rewrites) requests that http.ReadRequest — with the
// checks net/http's server adds — parses from the same position of the same byte stream,
// in that order (the gateway may stop earlier, never later or elsewhere), or the cut-off
// start of one whose head net/http takes; the client may only get each request's own
// answer or an error of the gateway's own, and nothing that is not a response.
//
// One gateway and backend serve a whole fuzz run (each fuzz worker process sets up its
// own in the target, before f.Fuzz; the fuzz function itself only dials). Every input
// ends within pipeDeadline. The gateway's goroutines make coverage noisy — most inputs
// look new — so fuzzing spends its time minimizing them unless told not to:
//
//	go test -run '^$' -fuzz '^FuzzPipeline$' -fuzztime 60s -fuzzminimizetime 0 ./gateway/
//	go test -run '^$' -fuzz '^FuzzPipelineHostile$' -fuzztime 60s -fuzzminimizetime 0 ./gateway/

// pipeDeadline bounds one input: writing, every answer, the close.
const pipeDeadline = 2 * time.Second

func FuzzPipeline(f *testing.F) {
	for _, seed := range pipeSeeds() {
		f.Add(seed)
	}
	rig := newPipeRig(f, "pipeline-fuzz")
	f.Fuzz(func(t *testing.T, data []byte) { rig.valid(t, data) })
}

func FuzzPipelineHostile(f *testing.F) {
	for _, seed := range pipeSeeds() {
		f.Add(seed)
	}
	rig := newPipeRig(f, "pipeline-hostile")
	f.Fuzz(func(t *testing.T, data []byte) { rig.hostile(t, data) })
}

// pipeSeeds are a few fixed inputs (any bytes make a pipeline; these make varied ones).
func pipeSeeds() [][]byte {
	rng := rand.New(rand.NewPCG(20261201, 1))
	seeds := [][]byte{nil, bytes.Repeat([]byte{0xff}, 64), bytes.Repeat([]byte{0x7f}, 200)}
	for range 21 {
		b := make([]byte, 48+rng.IntN(400))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// ---- the rig: one gateway, one recording backend ----

type pipeRig struct {
	be     *recBackend
	addr   string // the gateway's public listener
	host   string // routed to be
	logs   *lockedBuffer
	access *lockedBuffer // the access log of the current input
	busy   atomic.Int32  // backend connections inside a request
	inputs atomic.Int64
}

func newPipeRig(tb testing.TB, svc string) *pipeRig {
	tb.Helper()
	rig := &pipeRig{host: host(svc), logs: &lockedBuffer{}, access: &lockedBuffer{}}
	rig.be = newRecBackend(tb, rig.serve)
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	g := routeBackend(tb, svc, rig.be, func(c *gateway.Config) {
		// Not the test's logger: a fuzz function may not log through its *testing.F.
		c.Logger = zap.New(zapcore.NewCore(enc, rig.logs, zapcore.WarnLevel))
		c.AccessLog = zap.New(zapcore.NewCore(enc.Clone(), rig.access, zapcore.InfoLevel))
		// The model serves an h2c upgrade as HTTP/1.1, as net/http does; the upgrade
		// itself is tested in h2_test.go and h2hostile_test.go.
		c.NoH2CUpgrade = true
	})
	rig.addr = g.PublicAddr()
	return rig
}

// take returns the requests the backend recorded since the last take, and forgets them
// (a fuzz run records hundreds of thousands).
func (rig *pipeRig) take() []*recReq {
	b := rig.be
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.reqs
	b.reqs = nil
	return out
}

// settle waits (a little) until no backend connection is inside a request: a request the
// gateway cut off mid-body is recorded when the backend sees the close.
func (rig *pipeRig) settle(d time.Duration) {
	for end := time.Now().Add(d); rig.busy.Load() > 0 && time.Now().Before(end); {
		time.Sleep(200 * time.Microsecond)
	}
}

// serve is the backend's script: each request is answered as its target's plan says
// (planFor), the answer naming the request's target and a hash of the body bytes
// received.
func (rig *pipeRig) serve(c *recConn) {
	for {
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		rig.busy.Add(1)
		r, err := c.next()
		if err == nil {
			p := planFor(r.Target)
			err = c.write(p.render(r))
			if p.flags&flagClose != 0 {
				err = io.EOF // it said Connection: close
			}
		}
		rig.busy.Add(-1)
		if err != nil {
			return
		}
	}
}

// ---- the instance's answers ----

// respPlan is how the backend answers a request; it is encoded in the request's path
// (spec), so the client knows what its answer must be.
type respPlan struct {
	kind  int
	pad   int    // body bytes after the id line
	seed  uint16 // chunk sizes, extensions, trailers
	flags int
}

const (
	kindLength      = iota // 200, Content-Length
	kindChunked            // 200, chunked
	kindNoContent          // 204
	kindNotModified        // 304 with a Content-Length, no body
	kindEarlyHints         // 103 Early Hints first, then 201 with Content-Length
	kindContinue           // the instance's own 100 Continue first, then 200 chunked
	kindNotFound           // the instance's 404, Content-Length
	nKinds
)

const (
	flagClose = 1 // Connection: close, and the backend closes after it
	flagHop   = 2 // hop-by-hop headers the client must not get
	flagBoth  = 4 // a chunked answer with a Content-Length beside it (chunked wins)
)

// Marks of what the gateway must not relay; none of them occurs anywhere else.
const (
	hopMark    = "must-not-reach-the-client"
	keepMark   = "timeout=5, max=77"
	bothCLLine = "Content-length:  7"
)

func (p respPlan) spec() string { return fmt.Sprintf("r%d%05d%04x%d", p.kind, p.pad, p.seed, p.flags) }

var specRE = regexp.MustCompile(`/r([0-6])([0-9]{5})([0-9a-f]{4})([0-7])(?:\?|$)`)

// planFor reads a target's plan; a target without one (a mutated one) gets a plain 200.
func planFor(target string) respPlan {
	m := specRE.FindStringSubmatch(target)
	if m == nil {
		return respPlan{}
	}
	kind, _ := strconv.Atoi(m[1])
	pad, _ := strconv.Atoi(m[2])
	seed, _ := strconv.ParseUint(m[3], 16, 16)
	flags, _ := strconv.Atoi(m[4])
	return respPlan{kind: kind, pad: pad, seed: uint16(seed), flags: flags}
}

func (p respPlan) status() (int, string) {
	switch p.kind {
	case kindNoContent:
		return 204, "No Content"
	case kindNotModified:
		return 304, "Not Modified"
	case kindEarlyHints:
		return 201, "Created"
	case kindNotFound:
		return 404, "Not Found"
	}
	return 200, "OK"
}

func (p respPlan) hasBody() bool { return p.kind != kindNoContent && p.kind != kindNotModified }

// body is the answer's body to a request for target whose body hashed to sha.
func (p respPlan) body(target, sha string) []byte {
	b := []byte("id=" + strconv.QuoteToASCII(target) + " sha=" + sha + "\n")
	for k := range p.pad {
		b = append(b, 'a'+byte((k+int(p.seed))%26))
	}
	return b
}

// expect is what the client must read: the status and the body.
func (p respPlan) expect(target, sha, method string) (int, []byte) {
	st, _ := p.status()
	if method == "HEAD" || !p.hasBody() {
		return st, []byte{}
	}
	return st, p.body(target, sha)
}

// render is the backend's answer to r, bytes on the wire.
func (p respPlan) render(r *recReq) string {
	sha := bodySHA(recBody(r))
	body := p.body(r.Target, sha)
	head := r.Method == "HEAD"
	var b strings.Builder
	switch p.kind {
	case kindEarlyHints:
		b.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </pipe.css>; rel=preload\r\n\r\n")
	case kindContinue:
		b.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	}
	code, text := p.status()
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nX-Pipe-Backend: 1\r\nX-Req-Id: %s\r\nX-Body-Sha: %s\r\nContent-Type: text/plain\r\n", code, text, strconv.QuoteToASCII(r.Target), sha)
	var tokens []string
	if p.flags&flagClose != 0 {
		tokens = append(tokens, "close")
	}
	if p.flags&flagHop != 0 {
		tokens = append(tokens, "X-Resp-Hop")
		b.WriteString("X-Resp-Hop: " + hopMark + "\r\nKeep-Alive: " + keepMark + "\r\n")
	}
	if len(tokens) > 0 {
		b.WriteString("Connection: " + strings.Join(tokens, ", ") + "\r\n")
	}
	switch p.kind {
	case kindChunked, kindContinue:
		if p.flags&flagBoth != 0 {
			b.WriteString(bothCLLine + "\r\n")
		}
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if !head {
			rng := rand.New(rand.NewPCG(uint64(p.seed), 1))
			maxc := []int{1, 7, 300, 5000, 40000}[p.seed%5]
			if len(body) > 4096 {
				maxc = max(maxc, 7) // 1-byte chunks: 6 bytes on the wire per byte
			}
			for off := 0; off < len(body); {
				n := 1 + rng.IntN(min(maxc, len(body)-off))
				b.WriteString(strconv.FormatInt(int64(n), 16))
				if p.seed&8 != 0 && rng.IntN(3) == 0 {
					b.WriteString(";e=v")
				}
				b.WriteString("\r\n")
				b.Write(body[off : off+n])
				b.WriteString("\r\n")
				off += n
			}
			b.WriteString("0\r\n")
			if p.seed&16 != 0 {
				b.WriteString("X-Trailer-Sha: " + sha + "\r\n")
			}
			b.WriteString("\r\n")
		}
	case kindNoContent:
		b.WriteString("\r\n")
	case kindNotModified:
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	default:
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
		if !head {
			b.Write(body)
		}
	}
	return b.String()
}

// recBody is the body bytes of a recorded request as they arrived (chunked coding
// included), or nil when its head did not end.
func recBody(r *recReq) []byte {
	i := bytes.Index(r.Raw, []byte("\r\n\r\n"))
	if i < 0 {
		return nil
	}
	return r.Raw[i+4:]
}

func bodySHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// ---- the input bytes ----

// fuzzSrc hands out the input's bytes; when they run out, a generator seeded by all of
// them (so every input, short ones too, still makes a full pipeline, deterministically).
type fuzzSrc struct {
	b   []byte
	rng *rand.Rand
}

func newFuzzSrc(b []byte) *fuzzSrc {
	h := fnv.New64a()
	h.Write(b)
	return &fuzzSrc{b: b, rng: rand.New(rand.NewPCG(h.Sum64(), uint64(len(b))))}
}

func (s *fuzzSrc) byte() byte {
	if len(s.b) > 0 {
		c := s.b[0]
		s.b = s.b[1:]
		return c
	}
	return byte(s.rng.Uint32())
}

// intn is in [0, n).
func (s *fuzzSrc) intn(n int) int {
	if n <= 1 {
		return 0
	}
	v := uint32(s.byte())
	if n > 256 {
		v = v<<8 | uint32(s.byte())
	}
	if n > 65536 {
		v = v<<8 | uint32(s.byte())
	}
	return int(v % uint32(n))
}

func (s *fuzzSrc) chance(k, of int) bool { return s.intn(of) < k }

func (s *fuzzSrc) uint64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(s.byte())
	}
	return v
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// ---- the client's requests ----

// pipeReq is one generated request and what must come of it.
type pipeReq struct {
	method    string
	path      string // origin-form target: what the instance must get; the request's id
	target    string // the target as sent
	pre       string // empty lines before it (RFC 9112 §2.2)
	head      string // as sent, blank line included
	body      []byte // as sent (a chunked body with its coding)
	data      []byte // the body's data
	framing   [][2]int
	expect100 bool // Expect: 100-continue with a body: the gateway answers 100 itself
	wait100   bool // the client holds the body until that 100 came
	close     bool // Connection: close
	kept      []string
	xff       []string // the client's X-Forwarded-For values
	host      string   // the Host the instance must get
	plan      respPlan
}

// pipeGen is what a pipeline is made for.
type pipeGen struct {
	host    string // the routed host
	input   string // the input's part of each id
	hostile bool   // the base of mutations: the client never waits for 100 Continue
}

func genPipeline(s *fuzzSrc, g pipeGen) []*pipeReq {
	n := 1 + s.intn(12)
	reqs := make([]*pipeReq, n)
	for i := range reqs {
		reqs[i] = genRequest(s, g, i, i == n-1)
	}
	return reqs
}

const (
	lineExtra   = iota // an ordinary header: forwarded unless Connection names it
	lineFraming        // Content-Length, Transfer-Encoding: forwarded even when named
	lineDrop           // removed or replaced by the gateway
)

func genRequest(s *fuzzSrc, g pipeGen, i int, last bool) *pipeReq {
	rng := rand.New(rand.NewPCG(s.uint64(), uint64(i)))
	r := &pipeReq{method: pick(rng, "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")}
	r.plan = respPlan{kind: s.intn(nKinds), seed: uint16(s.intn(1 << 16)), flags: s.intn(8)}
	switch s.intn(4) {
	case 0, 1:
		r.plan.pad = s.intn(64)
	case 2:
		r.plan.pad = s.intn(20000)
	default:
		r.plan.pad = 16000 + s.intn(24000) // past the gateway's 16 KiB upstream buffer
	}
	r.path = fmt.Sprintf("/p/%s/%02d/%s", g.input, i, r.plan.spec())
	if s.chance(1, 5) {
		r.path += pick(rng, "?q=1", "?a=b&c=%41", "?", "?x=/y?z")
	}
	target := r.path
	absolute := s.chance(1, 10)
	if absolute {
		target = pick(rng, "http://", "HTTP://") + g.host + r.path
	}
	r.target = target
	if s.chance(1, 10) {
		r.pre = pick(rng, "\r\n", "\r\n\r\n")
	}

	// The body.
	bodyish := r.method == "POST" || r.method == "PUT"
	framing := "none"
	if (bodyish && s.chance(8, 10)) || (!bodyish && s.chance(2, 10)) {
		var size int
		switch c := s.intn(10); {
		case c < 4:
			size = s.intn(65)
		case c < 7:
			size = 65 + s.intn(8192-65+1) // up to the gateway's 8 KiB prefetch
		default:
			size = 8193 + s.intn(20000-8193+1) // streamed
		}
		r.data = genData(s, rng, size, g.host)
		if s.chance(4, 10) {
			framing = "chunked"
			r.body, r.framing = encodeChunked(s, r.data)
		} else {
			framing = "length"
			r.body = r.data
			if size == 0 {
				framing = "zero"
			}
		}
	} else if s.chance(1, 4) {
		framing = "zero"
	}

	// The header lines.
	type hline struct {
		text, name string // name in lower case
		kind       int
		xff        string // an X-Forwarded-For line's value
	}
	var lines []hline
	ows := func() string { return pick(rng, "", " ", " ", " ", "  ", "\t", " \t") }
	tws := func() string {
		if rng.IntN(8) == 0 {
			return pick(rng, " ", "\t", "  ")
		}
		return ""
	}
	add := func(name, value string, kind int) {
		lines = append(lines, hline{text: name + ":" + ows() + value + tws(), name: strings.ToLower(name), kind: kind})
	}
	caseOf := func(name string) string {
		switch rng.IntN(5) {
		case 0:
			return strings.ToLower(name)
		case 1:
			return strings.ToUpper(name)
		}
		return name
	}
	r.host = g.host
	hostValue := g.host
	if absolute {
		hostValue = pick(rng, "decoy.example", g.host, "decoy.example:8080")
	}
	add(caseOf("Host"), hostValue, lineDrop)
	switch framing {
	case "length", "zero":
		add(caseOf("Content-Length"), strconv.Itoa(len(r.body)), lineFraming)
	case "chunked":
		add(caseOf("Transfer-Encoding"), pick(rng, "chunked", "Chunked", "CHUNKED"), lineFraming)
	}
	var extras []string
	for range s.intn(5) {
		name := "X-R" + randToken(rng)
		extras = append(extras, name)
		add(name, randValue(rng), lineExtra)
	}
	if s.chance(1, 3) {
		add("User-Agent", "pipeline-fuzz/1.0", lineExtra)
	}
	if s.chance(1, 4) {
		add(caseOf("Cookie"), "a=b; c=d", lineExtra)
	}
	if s.chance(1, 3) {
		for range 1 + rng.IntN(3) {
			v := pick(rng, "1.2.3.4", "10.0.0.1, 10.0.0.2", "2001:db8::1", "", "192.0.2.7 , 198.51.100.1")
			add(caseOf("X-Forwarded-For"), v, lineDrop)
			lines[len(lines)-1].xff = v
		}
	}
	if s.chance(1, 5) {
		add(caseOf("X-Forwarded-Host"), "evil.example", lineDrop)
	}
	if s.chance(1, 5) {
		add(caseOf("X-Forwarded-Proto"), pick(rng, "https", "ftp"), lineDrop)
	}
	var tokens []string
	if s.chance(1, 5) {
		add(caseOf("Keep-Alive"), "timeout=5, max=100", lineDrop)
	}
	if s.chance(1, 6) {
		add(caseOf("TE"), "trailers", lineDrop)
	}
	if s.chance(1, 8) {
		add(caseOf("Trailer"), "X-Trailer", lineDrop)
	}
	if s.chance(1, 8) {
		add(caseOf("Proxy-Authorization"), "Basic Zm9vOmJhcg==", lineDrop)
	}
	if s.chance(1, 10) {
		add("Proxy-Authenticate", `Basic realm="x"`, lineDrop)
	}
	if s.chance(1, 8) {
		add(caseOf("Proxy-Connection"), "keep-alive", lineDrop)
	}
	switch s.intn(8) {
	case 0: // not an upgrade: Connection does not say upgrade
		add(caseOf("Upgrade"), "websocket", lineDrop)
	case 1: // h2c is declined: served as HTTP/1.1
		add(caseOf("Upgrade"), "h2c", lineDrop)
		add(caseOf("HTTP2-Settings"), "AAMAAABkAARAAAAAAAIAAAAA", lineDrop)
		tokens = append(tokens, "Upgrade", "HTTP2-Settings")
	}
	if s.chance(1, 6) {
		add(caseOf("Expect"), pick(rng, "100-continue", "100-Continue"), lineDrop)
		r.expect100 = framing == "length" || framing == "chunked"
		r.wait100 = r.expect100 && !g.hostile && s.chance(1, 2)
	}
	if s.chance(1, 3) {
		tokens = append(tokens, "keep-alive")
	}
	for _, e := range extras {
		if rng.IntN(3) == 0 {
			tokens = append(tokens, caseOf(e))
		}
	}
	if s.chance(1, 6) {
		tokens = append(tokens, "X-Nothing-Here")
	}
	if framing != "none" && s.chance(1, 6) {
		tokens = append(tokens, map[bool]string{true: "Transfer-Encoding", false: "Content-Length"}[framing == "chunked"])
	}
	if last && s.chance(1, 3) {
		tokens = append(tokens, "close")
		r.close = true
	}
	rng.Shuffle(len(tokens), func(a, b int) { tokens[a], tokens[b] = tokens[b], tokens[a] })
	if len(tokens) > 0 {
		sep := pick(rng, ", ", ",", " , ")
		if k := rng.IntN(len(tokens) + 1); len(tokens) > 1 && k > 0 && k < len(tokens) {
			add(caseOf("Connection"), strings.Join(tokens[:k], sep), lineDrop)
			add(caseOf("Connection"), strings.Join(tokens[k:], sep), lineDrop)
		} else {
			add(caseOf("Connection"), strings.Join(tokens, sep), lineDrop)
		}
	}
	named := map[string]bool{}
	for _, tok := range tokens {
		named[strings.ToLower(tok)] = true
	}
	rng.Shuffle(len(lines), func(a, b int) { lines[a], lines[b] = lines[b], lines[a] })
	var h strings.Builder
	h.WriteString(r.method + " " + target + " HTTP/1.1\r\n")
	for _, l := range lines {
		h.WriteString(l.text + "\r\n")
		if l.kind == lineFraming || (l.kind == lineExtra && !named[l.name]) {
			r.kept = append(r.kept, l.text)
		}
		if l.xff != "" {
			r.xff = append(r.xff, l.xff)
		}
	}
	h.WriteString("\r\n")
	r.head = h.String()
	return r
}

const tokenChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~"

func randToken(rng *rand.Rand) string {
	b := make([]byte, 1+rng.IntN(10))
	for i := range b {
		b[i] = tokenChars[rng.IntN(len(tokenChars))]
	}
	return string(b)
}

// randValue is a field value: visible bytes, inner spaces and tabs, sometimes obs-text.
func randValue(rng *rand.Rand) string {
	n := rng.IntN(30)
	b := make([]byte, 0, n)
	obs := rng.IntN(6) == 0
	for i := range n {
		switch c := rng.IntN(20); {
		case c == 0 && i > 0 && i < n-1:
			b = append(b, pick(rng, byte(' '), '\t'))
		case c == 1 && obs:
			b = append(b, byte(0x80+rng.IntN(0x80)))
		default:
			b = append(b, byte(0x21+rng.IntN(0x7e-0x21+1)))
		}
	}
	return string(b)
}

// genData is a body's data: text, sometimes with what looks like a request (plain data to
// a proxy that frames correctly), sometimes any bytes.
func genData(s *fuzzSrc, rng *rand.Rand, size int, host string) []byte {
	const alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-_/:;="
	b := make([]byte, size)
	binary := s.chance(1, 8)
	for i := range b {
		if binary {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
	}
	if size > 0 && s.chance(1, 4) {
		bait := pick(rng,
			"GET /smuggled HTTP/1.1\r\nHost: "+host+"\r\n\r\n",
			"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: "+host+"\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
			"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		copy(b[rng.IntN(size):], bait)
	}
	return b
}

// encodeChunked is data in the chunked coding: random chunk sizes, hex styles, extensions,
// trailers, all valid (no whitespace after a size: docs/gateway.md refuses it, as net/http
// does); framing are the spans of the coding's own bytes.
func encodeChunked(s *fuzzSrc, data []byte) (body []byte, framing [][2]int) {
	rng := rand.New(rand.NewPCG(s.uint64(), 3))
	maxc := []int{1, 16, 700, 5000, 30000}[s.intn(5)]
	extEvery := []int{0, 0, 8, 2}[s.intn(4)]
	style := s.intn(3)
	hexOf := func(n int) string {
		switch style {
		case 0:
			return strconv.FormatInt(int64(n), 16)
		case 1:
			return strings.ToUpper(strconv.FormatInt(int64(n), 16))
		}
		return fmt.Sprintf("%04x", n)
	}
	ext := func() string {
		if extEvery == 0 || rng.IntN(extEvery) != 0 {
			return ""
		}
		return pick(rng, ";ext", ";a=b", `;name="x y"`, ";k=v;k2")
	}
	mark := func(from int) { framing = append(framing, [2]int{from, len(body)}) }
	for off := 0; off < len(data); {
		n := 1 + rng.IntN(min(maxc, len(data)-off))
		from := len(body)
		body = append(body, hexOf(n)+ext()+"\r\n"...)
		mark(from)
		body = append(body, data[off:off+n]...)
		from = len(body)
		body = append(body, "\r\n"...)
		mark(from)
		off += n
	}
	from := len(body)
	body = append(body, pick(rng, "0", "0", "0", "000")+ext()+"\r\n"...)
	if s.chance(1, 4) {
		for range 1 + rng.IntN(2) {
			body = append(body, pick(rng, "X-Trailer: v", "X-Sum:"+strconv.Itoa(len(data)), "x-t2:  a b ")+"\r\n"...)
		}
	}
	body = append(body, "\r\n"...)
	mark(from)
	return body, framing
}

// pipeStream is the requests back to back, with where their parts are.
type pipeStream struct {
	b        []byte
	heads    [][2]int
	headEnds []int
	framing  [][2]int
}

func serialize(reqs []*pipeReq) *pipeStream {
	st := &pipeStream{}
	for _, r := range reqs {
		st.b = append(st.b, r.pre...)
		from := len(st.b)
		st.b = append(st.b, r.head...)
		st.heads = append(st.heads, [2]int{from, len(st.b)})
		st.headEnds = append(st.headEnds, len(st.b))
		for _, f := range r.framing {
			st.framing = append(st.framing, [2]int{len(st.b) + f[0], len(st.b) + f[1]})
		}
		st.b = append(st.b, r.body...)
	}
	return st
}

// seg is one write: stream[from:to], after pause, and (wait >= 0) after request wait's
// 100 Continue arrived.
type seg struct {
	from, to int
	pause    time.Duration
	wait     int
}

// splitWrites cuts a stream of total bytes into up to 16 writes at random places, and at
// each offset of waits (a request's head end → its index).
func splitWrites(s *fuzzSrc, total int, waits map[int]int) []seg {
	cuts := map[int]int{}
	if total > 1 {
		for range s.intn(16) {
			cuts[1+s.intn(total-1)] = -1
		}
	}
	for off, i := range waits {
		cuts[off] = i
	}
	offs := make([]int, 0, len(cuts))
	for off := range cuts {
		if off > 0 && off < total {
			offs = append(offs, off)
		}
	}
	sort.Ints(offs)
	var segs []seg
	from, wait := 0, -1
	for _, off := range append(offs, total) {
		var pause time.Duration
		if s.chance(1, 3) {
			pause = time.Duration(s.intn(3000)) * time.Microsecond
		}
		segs = append(segs, seg{from: from, to: off, pause: pause, wait: wait})
		from, wait = off, cuts[off]
	}
	return segs
}

// ---- the client connection ----

type pipeResp struct {
	status  int
	header  http.Header
	body    []byte
	close   bool
	interim []int // 1xx statuses before it
	err     error // reading its body
	// headBody: an answer of the gateway's own to a HEAD announced a body and sent it
	// anyway (RFC 9110 §9.3.2: it must not); these bytes were skipped.
	headBody int
}

type pipeRun struct {
	resps []pipeResp
	end   error  // what ended the reading: nil is a close right after a whole response
	rest  []byte // bytes after the responses wanted
	got   []byte // every byte read
	werr  error
	local string // the client's address
}

// timedOut: the run ended because its deadline passed.
func (run *pipeRun) timedOut() bool {
	if isTimeoutErr(run.end) {
		return true
	}
	for _, r := range run.resps {
		if isTimeoutErr(r.err) {
			return true
		}
	}
	return false
}

// run writes stream in segs on one new connection from local, half-closes it, and reads
// responses — want of them, then everything to the close (want < 0: until the close or
// what is not a response). method(i) is the method of the request response i answers.
func (rig *pipeRig) run(stream []byte, segs []seg, nreq int, method func(int) string, want int, local net.IP, deadline time.Time) (*pipeRun, error) {
	// A receive buffer that takes every answer at once (set before connect, for the window
	// scale): the gateway closes right after its answer to a malformed request, with the
	// client's later bytes unread, which resets the connection and drops whatever the
	// gateway had not sent yet — the end of an earlier answer, its own answer. That is
	// its own finding (RFC 9112 §9.6 asks a server to close its write side first and
	// drain); with the client's window always open nothing is left unsent, so the
	// properties here see every byte the gateway wrote.
	d := net.Dialer{Deadline: deadline, LocalAddr: &net.TCPAddr{IP: local}, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<20) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", rig.addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(deadline)
	run := &pipeRun{local: c.LocalAddr().String()}
	cont := make([]chan struct{}, nreq)
	for i := range cont {
		cont[i] = make(chan struct{})
	}
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for _, sg := range segs {
			if sg.wait >= 0 {
				select {
				case <-cont[sg.wait]:
				case <-stop:
					run.werr = fmt.Errorf("request %d: still waiting for 100 Continue", sg.wait)
					return
				}
			}
			if sg.pause > 0 {
				time.Sleep(sg.pause)
			}
			if _, err := c.Write(stream[sg.from:sg.to]); err != nil {
				run.werr = err
				return
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	defer func() {
		close(stop)
		c.Close()
		<-wrote
	}()
	var got bytes.Buffer
	defer func() { run.got = got.Bytes() }()
	br := bufio.NewReader(io.TeeReader(c, &got))
	continued := make([]bool, nreq)
	for i := 0; want < 0 || i < want; i++ {
		if _, err := br.Peek(1); err != nil {
			if err != io.EOF {
				run.end = err
			}
			return run, nil
		}
		var pr pipeResp
		for {
			if len(pr.interim) > 0 {
				// A close after 100 Continue is no answer: the request's body never ended.
				if _, err := br.Peek(1); err == io.EOF {
					return run, nil
				}
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: method(i)})
			if err != nil {
				run.end = err
				return run, nil
			}
			if resp.StatusCode < 200 && resp.StatusCode != 101 {
				pr.interim = append(pr.interim, resp.StatusCode)
				if resp.StatusCode == 100 && i < nreq && !continued[i] {
					continued[i] = true
					close(cont[i])
				}
				continue
			}
			pr.status, pr.header, pr.close = resp.StatusCode, resp.Header, resp.Close
			pr.body, pr.err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if n := int(resp.ContentLength); method(i) == "HEAD" && resp.Header.Get("X-Pipe-Backend") == "" && n > 0 && n < 1<<16 {
				if b, _ := br.Peek(n); len(b) == n && !bytes.HasPrefix(b, []byte("HTTP/1.")) {
					pr.headBody, _ = br.Discard(n)
				}
			}
			break
		}
		run.resps = append(run.resps, pr)
		if pr.err != nil {
			run.end = pr.err
			return run, nil
		}
	}
	run.rest, run.end = io.ReadAll(br)
	return run, nil
}

// ---- what the instance must get ----

// fwdModel is a request as the gateway must forward it.
type fwdModel struct {
	method, path, host string
	kept               []string // header lines forwarded as they came, in order
	xff                []string // the client's X-Forwarded-For values
	upgrade            string   // forwarded as an upgrade with this Upgrade value
}

// dropped: hop-by-hop headers, Expect, and the headers the gateway writes itself.
var dropped = map[string]bool{
	"host": true, "connection": true, "proxy-connection": true, "keep-alive": true, "te": true,
	"trailer": true, "upgrade": true, "proxy-authorization": true, "proxy-authenticate": true,
	"http2-settings": true, "expect": true,
	"x-forwarded-for": true, "x-forwarded-host": true, "x-forwarded-proto": true,
}

// modelForward applies docs/gateway.md's request rules to a head the gateway forwarded:
// origin-form target, Host (an absolute-form target's authority), hop-by-hop headers,
// the headers Connection names (framing headers excepted) and Expect removed, the client's
// X-Forwarded-For values kept for the one line, an upgrade (Connection: upgrade, Upgrade
// not h2c) forwarded as one.
func modelForward(head string) fwdModel {
	lines := strings.Split(strings.TrimSuffix(head, "\r\n\r\n"), "\r\n")
	var m fwdModel
	method, rest, _ := strings.Cut(lines[0], " ")
	target, _, _ := strings.Cut(rest, " ")
	m.method, m.path = method, target
	absHost := ""
	if !strings.HasPrefix(target, "/") && target != "*" {
		_, after, _ := strings.Cut(target, "://")
		end := strings.IndexAny(after, "/?")
		if end < 0 {
			end = len(after)
		}
		absHost, m.path = after[:end], after[end:]
	}
	if m.path == "" || m.path[0] == '?' {
		m.path = "/" + m.path
	}
	named := map[string]bool{}
	upgradeToken, upgradeValue, hostSeen := false, "", false
	for _, l := range lines[1:] {
		name, v, _ := strings.Cut(l, ":")
		v = strings.Trim(v, " \t")
		switch strings.ToLower(name) {
		case "connection", "proxy-connection":
			for _, tok := range strings.Split(v, ",") {
				tok = strings.ToLower(strings.Trim(tok, " \t"))
				named[tok] = true
				upgradeToken = upgradeToken || tok == "upgrade"
			}
		case "upgrade":
			upgradeValue = v // the last line's
		case "host":
			if !hostSeen {
				m.host, hostSeen = v, true
			}
		}
	}
	if absHost != "" {
		m.host = absHost
	}
	for _, l := range lines[1:] {
		name, v, _ := strings.Cut(l, ":")
		v = strings.Trim(v, " \t")
		lower := strings.ToLower(name)
		switch {
		case lower == "x-forwarded-for":
			if v != "" {
				m.xff = append(m.xff, v)
			}
		case dropped[lower]:
		case lower == "content-length" || lower == "transfer-encoding":
			m.kept = append(m.kept, l)
		case named[lower]: // RFC 9110 §7.6.1
		default:
			m.kept = append(m.kept, l)
		}
	}
	if upgradeToken && upgradeValue != "" && !slices.ContainsFunc(strings.Split(upgradeValue, ","), func(p string) bool {
		return strings.EqualFold(strings.Trim(p, " \t"), "h2c")
	}) {
		m.upgrade = upgradeValue
	}
	return m
}

// checkForwarded compares what the instance got with the model; ip is the client's.
func checkForwarded(r *recReq, m fwdModel, ip string) []string {
	var p []string
	if r.Err != nil {
		p = append(p, "the backend could not follow its framing: "+r.Err.Error())
	}
	if want := m.method + " " + m.path + " HTTP/1.1"; r.Line != want {
		p = append(p, fmt.Sprintf("request line %q, want %q", r.Line, want))
	}
	skip := map[string]bool{"host": true, "x-forwarded-for": true, "x-forwarded-host": true, "x-forwarded-proto": true}
	if m.upgrade != "" {
		skip["connection"], skip["upgrade"] = true, true
	}
	var other []string
	for _, l := range r.Lines {
		if name, _, _ := strings.Cut(l, ":"); !skip[strings.ToLower(name)] {
			other = append(other, l)
		}
	}
	if !slices.Equal(other, m.kept) {
		p = append(p, fmt.Sprintf("header lines %q, want %q", other, m.kept))
	}
	xff := ip
	if len(m.xff) > 0 {
		xff = strings.Join(m.xff, ", ") + ", " + ip
	}
	want := [][2]string{{"Host", m.host}, {"X-Forwarded-For", xff}, {"X-Forwarded-Proto", "http"}, {"X-Forwarded-Host", m.host}}
	if m.upgrade != "" {
		want = append(want, [2]string{"Connection", "Upgrade"}, [2]string{"Upgrade", m.upgrade})
	}
	for _, w := range want {
		if got := r.values(w[0]); !slices.Equal(got, []string{w[1]}) {
			p = append(p, fmt.Sprintf("%s lines %q, want one, %q", w[0], got, w[1]))
		}
	}
	return p
}

// ---- FuzzPipeline ----

// outcome is one run of an input, for its report.
type outcome struct {
	problems []string
	retry    bool // it only ran out of time
	stream   []byte
	run      *pipeRun
	recs     []*recReq
	extra    string
}

// attempt runs an input; one that only ran out of time runs once more with a longer
// deadline before it fails: the fuzz worker shares the machine (a stall of its process
// is not a hang of the gateway's), and a real hang is deterministic.
func (rig *pipeRig) attempt(t *testing.T, once func(deadline time.Duration) outcome) {
	t.Helper()
	o := once(pipeDeadline)
	if len(o.problems) > 0 && (o.retry || o.run.timedOut()) {
		o = once(3 * pipeDeadline)
	}
	if len(o.problems) > 0 {
		rig.report(t, o.problems, o.stream, o.run, o.recs, o.extra)
	}
}

func (rig *pipeRig) valid(t *testing.T, data []byte) {
	rig.attempt(t, func(deadline time.Duration) outcome {
		s := newFuzzSrc(data)
		g := pipeGen{host: rig.host, input: fmt.Sprintf("%08d", rig.inputs.Add(1))}
		reqs := genPipeline(s, g)
		st := serialize(reqs)
		waits := map[int]int{}
		for i, r := range reqs {
			if r.wait100 {
				waits[st.headEnds[i]] = i
			}
		}
		segs := splitWrites(s, len(st.b), waits)
		const ip = "127.0.0.1"
		rig.take()
		rig.access.mu.Lock()
		rig.access.buf.Reset()
		rig.access.mu.Unlock()
		run, err := rig.run(st.b, segs, len(reqs), func(i int) string {
			if i < len(reqs) {
				return reqs[i].method
			}
			return "GET"
		}, len(reqs), net.ParseIP(ip), time.Now().Add(deadline))
		if err != nil {
			return outcome{problems: []string{fmt.Sprintf("dial the gateway: %v", err)}, retry: isTimeoutErr(err), stream: st.b, run: &pipeRun{}}
		}
		recs := rig.take()
		p := checkValid(reqs, g, run, recs, ip)
		p = append(p, checkAccessLog(reqs, run, rig.access.String())...)
		return outcome{problems: p, stream: st.b, run: run, recs: recs, extra: describe(reqs)}
	})
}

// checkAccessLog: one line per request, in order, with its host, method, target (as
// sent) and status (docs/gateway.md, "Access log").
func checkAccessLog(reqs []*pipeReq, run *pipeRun, log string) []string {
	type line struct {
		Host, Method, URI, Remote string
		Status                    int
	}
	var lines []line
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		var e line
		if err := json.Unmarshal([]byte(l), &e); err == nil && e.Remote == run.local {
			lines = append(lines, e)
		}
	}
	var p []string
	if len(lines) != len(reqs) {
		p = append(p, fmt.Sprintf("the access log has %d lines for the connection's %d requests", len(lines), len(reqs)))
	}
	for i, l := range lines {
		if i >= len(reqs) {
			break
		}
		r := reqs[i]
		status, _ := r.plan.status()
		if l.Host != r.host || l.Method != r.method || l.URI != r.target || l.Status != status {
			p = append(p, fmt.Sprintf("access log line %d: host %q method %q uri %q status %d; want %q %q %q %d", i, l.Host, l.Method, l.URI, l.Status, r.host, r.method, r.target, status))
		}
	}
	return p
}

func checkValid(reqs []*pipeReq, g pipeGen, run *pipeRun, recs []*recReq, ip string) []string {
	var p []string
	// The instance: each request once, in order, as the client sent it but for the
	// documented rewrites.
	prefix := "/p/" + g.input + "/"
	for _, r := range recs {
		if !strings.HasPrefix(r.Target, prefix) {
			p = append(p, fmt.Sprintf("the instance received a request the client did not send: %s", r))
		}
	}
	if len(recs) != len(reqs) {
		p = append(p, fmt.Sprintf("the instance received %d requests, the client sent %d", len(recs), len(reqs)))
	}
	for i, r := range reqs {
		m := modelForward(r.head)
		want := fwdModel{method: r.method, path: r.path, host: r.host, kept: r.kept, xff: r.xff}
		if m.method != want.method || m.path != want.path || m.host != want.host || !slices.Equal(m.kept, want.kept) || !slices.Equal(m.xff, want.xff) || m.upgrade != "" {
			p = append(p, fmt.Sprintf("test bug: the rules model makes request %d %+v, the generator %+v", i, m, want))
		}
		if i >= len(recs) {
			continue
		}
		rec := recs[i]
		for _, q := range checkForwarded(rec, want, ip) {
			p = append(p, fmt.Sprintf("request %d (%s %s): %s", i, r.method, r.path, q))
		}
		if raw := recBody(rec); !bytes.Equal(raw, r.body) {
			p = append(p, fmt.Sprintf("request %d: the instance got a body of %d bytes (%.80q…), the client sent %d (%.80q…)", i, len(raw), raw, len(r.body), r.body))
		} else if !bytes.Equal(rec.Body, r.data) {
			p = append(p, fmt.Sprintf("request %d: the body's data as the backend decoded it differs from what the client sent", i))
		}
	}
	// The client: one answer per request, in order, each its own; then the close.
	if len(run.resps) != len(reqs) {
		p = append(p, fmt.Sprintf("the client got %d responses to %d requests; then %v", len(run.resps), len(reqs), run.end))
	}
	for i, resp := range run.resps {
		if i >= len(reqs) {
			break
		}
		r := reqs[i]
		sha := bodySHA(r.body)
		status, body := r.plan.expect(r.path, sha, r.method)
		var why []string
		if resp.status != status || resp.err != nil {
			why = append(why, fmt.Sprintf("status %d (body error %v), want %d", resp.status, resp.err, status))
		}
		if id := resp.header.Get("X-Req-Id"); id != strconv.QuoteToASCII(r.path) {
			why = append(why, fmt.Sprintf("X-Req-Id %s, want %s", id, strconv.QuoteToASCII(r.path)))
		}
		if h := resp.header.Get("X-Body-Sha"); h != sha {
			why = append(why, fmt.Sprintf("X-Body-Sha %s, want %s", h, sha))
		}
		if !bytes.Equal(resp.body, body) {
			why = append(why, fmt.Sprintf("body %.120q (%d bytes), want %.120q (%d bytes)", resp.body, len(resp.body), body, len(body)))
		}
		var interim []int
		if r.expect100 {
			interim = []int{100} // the gateway's own; the instance's 1xx are not relayed
		}
		if !slices.Equal(resp.interim, interim) {
			why = append(why, fmt.Sprintf("1xx responses before it %v, want %v", resp.interim, interim))
		}
		if resp.close != r.close {
			why = append(why, fmt.Sprintf("Connection: close is %v, want %v", resp.close, r.close))
		}
		if resp.header.Get("X-Resp-Hop") != "" || resp.header.Get("Keep-Alive") != "" {
			why = append(why, "the instance's hop-by-hop headers were relayed")
		}
		if len(why) > 0 {
			p = append(p, fmt.Sprintf("response %d (to %s %s): %s", i, r.method, r.path, strings.Join(why, "; ")))
		}
	}
	for _, mark := range []string{hopMark, keepMark, bothCLLine} {
		if bytes.Contains(run.got, []byte(mark)) {
			p = append(p, fmt.Sprintf("the client read %q, which the gateway must not relay", mark))
		}
	}
	if run.end != nil || len(run.rest) > 0 {
		p = append(p, fmt.Sprintf("after the last response the client read %d bytes (%.200q), then %v; want nothing, then the close", len(run.rest), run.rest, run.end))
	}
	if run.werr != nil {
		p = append(p, fmt.Sprintf("writing the requests: %v", run.werr))
	}
	return p
}

// describe lists the requests of a pipeline, for a failure's report.
func describe(reqs []*pipeReq) string {
	var b strings.Builder
	for i, r := range reqs {
		kind := "no body"
		switch {
		case len(r.framing) > 0:
			kind = fmt.Sprintf("chunked, %d data bytes in %d chunks", len(r.data), len(r.framing)/2)
		case r.body != nil:
			kind = fmt.Sprintf("Content-Length %d", len(r.body))
		}
		fmt.Fprintf(&b, "  %2d: %s; expect100 %v (client waits %v); head %q\n", i, kind, r.expect100, r.wait100, r.pre+r.head)
	}
	return b.String()
}

func (rig *pipeRig) report(t *testing.T, problems []string, stream []byte, run *pipeRun, recs []*recReq, extra string) {
	t.Helper()
	var b strings.Builder
	for i, q := range problems {
		if i == 12 {
			fmt.Fprintf(&b, "… %d problems in all\n", len(problems))
			break
		}
		b.WriteString("- " + q + "\n")
	}
	fmt.Fprintf(&b, "\nthe client sent %d bytes:\n%.4000q\n", len(stream), stream)
	if extra != "" {
		b.WriteString("\nrequests:\n" + extra)
	}
	b.WriteString("\nthe instance received:\n")
	for _, r := range recs {
		fmt.Fprintf(&b, "  %s\n", r)
	}
	fmt.Fprintf(&b, "\nthe client read %d bytes, ending with %v:\n%.4000q\n", len(run.got), run.end, run.got)
	if l := rig.logs.String(); l != "" {
		fmt.Fprintf(&b, "\ngateway warnings:\n%.2000s\n", l[max(0, len(l)-2000):])
	}
	t.Fatal(b.String())
}

// ---- FuzzPipelineHostile ----

// refReq is one request as net/http parses it from the stream.
type refReq struct {
	start, headEnd, end int
	method              string
	body                []byte // its data
}

type refPipe struct {
	reqs []refReq
	// next is where the request after the last one starts; nextHeadEnd where its head
	// ends when net/http took its head but not its body (else -1).
	next, nextHeadEnd int
	why               string
}

// refParse is Go's net/http reading the stream as a server does: http.ReadRequest in a
// loop, the checks its server adds (Host, field names and values, Expect), each body read
// to its end, stopping at the first error or after a request that closes the connection.
// Empty lines (CRLF) before a request line are skipped — RFC 9112 §2.2, which the gateway
// follows (docs/gateway.md); net/http skips them only after a POST.
func refParse(stream []byte) *refPipe {
	ref := &refPipe{nextHeadEnd: -1}
	pos := 0
	for {
		for pos+1 < len(stream) && stream[pos] == '\r' && stream[pos+1] == '\n' {
			pos += 2
		}
		ref.next, ref.nextHeadEnd = pos, -1
		if pos >= len(stream) {
			ref.why = "end of stream"
			return ref
		}
		rd := bytes.NewReader(stream[pos:])
		br := bufio.NewReader(rd)
		at := func() int { return len(stream) - rd.Len() - br.Buffered() }
		req, err := http.ReadRequest(br)
		if err != nil {
			ref.why = "ReadRequest: " + err.Error()
			return ref
		}
		headEnd := at()
		if why := serverRefuses(req, stream[pos:headEnd]); why != "" {
			ref.why = why
			return ref
		}
		ref.nextHeadEnd = headEnd
		body, err := io.ReadAll(req.Body)
		if err != nil {
			ref.why = "body: " + err.Error()
			return ref
		}
		end := at()
		ref.reqs = append(ref.reqs, refReq{start: pos, headEnd: headEnd, end: end, method: req.Method, body: body})
		pos = end
		if req.Close {
			ref.next, ref.why = end, "Connection: close"
			return ref
		}
	}
}

// serverRefuses is what net/http's server checks after reading a request (server.go,
// readRequest and serve), or "". head is the request's head: http.ReadRequest drops the
// Host lines from req.Header, so they are read from it again, by textproto as net/http
// does.
func serverRefuses(req *http.Request, head []byte) string {
	if req.ProtoMajor != 1 {
		return "505"
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	if _, err := tp.ReadLine(); err != nil {
		return "request line: " + err.Error()
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return "header: " + err.Error()
	}
	hosts, ok := hdr["Host"]
	if req.ProtoAtLeast(1, 1) && (!ok || len(hosts) == 0) && req.Method != "CONNECT" {
		return "missing required Host header"
	}
	if len(hosts) == 1 && !validHostHeader(hosts[0]) {
		return "malformed Host header"
	}
	for k, vv := range req.Header {
		if k == "" || strings.ContainsFunc(k, func(r rune) bool { return r > 0x7f || !strings.ContainsRune(tokenChars, r) }) {
			return "invalid header name"
		}
		for _, v := range vv {
			for i := range len(v) {
				if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
					return "invalid header value"
				}
			}
		}
	}
	if e := req.Header.Get("Expect"); e != "" && !slices.ContainsFunc(strings.FieldsFunc(e, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }), func(tok string) bool {
		return strings.EqualFold(tok, "100-continue")
	}) {
		return "417"
	}
	return ""
}

// validHostHeader is golang.org/x/net/http/httpguts.ValidHostHeader.
func validHostHeader(h string) bool {
	for i := range len(h) {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("!$%&()*+,-.:;=['_~]", c) >= 0) {
			return false
		}
	}
	return true
}

// hostileIP is the client address of input n: the gateway appends it to X-Forwarded-For,
// out of the client's reach, so each request the backend records can be told to be this
// input's even when its target was mutated (a request cut off mid-body may be recorded
// after its input ended).
func hostileIP(n int64) net.IP {
	return net.IPv4(127, 1, byte(n/254%256), byte(1+n%254))
}

var hostileIPRE = regexp.MustCompile(`^127\.1\.[0-9]+\.[0-9]+$`)

func (rig *pipeRig) hostile(t *testing.T, data []byte) {
	rig.attempt(t, func(deadline time.Duration) outcome {
		s := newFuzzSrc(data)
		n := rig.inputs.Add(1)
		ip := hostileIP(n)
		g := pipeGen{host: rig.host, input: fmt.Sprintf("%08d", n), hostile: true}
		reqs := genPipeline(s, g)
		st := serialize(reqs)
		stream := mutate(s, st, rig.host)
		segs := splitWrites(s, len(stream), nil)
		ref := refParse(stream)
		rig.take() // what earlier inputs left
		run, err := rig.run(stream, segs, 0, func(i int) string {
			if i < len(ref.reqs) {
				return ref.reqs[i].method
			}
			// The request net/http stopped at: a client that began it "HEAD " reads no
			// body after an answer's head, and the gateway answers it so.
			if i == len(ref.reqs) {
				rest := stream[min(ref.next, len(stream)):]
				for bytes.HasPrefix(rest, []byte("\r\n")) { // empty lines, as the gateway skips them
					rest = rest[2:]
				}
				if bytes.HasPrefix(rest, []byte("HEAD ")) {
					return "HEAD"
				}
			}
			return "GET"
		}, -1, ip, time.Now().Add(deadline))
		if err != nil {
			return outcome{problems: []string{fmt.Sprintf("dial the gateway from %s: %v", ip, err)}, retry: isTimeoutErr(err), stream: stream, run: &pipeRun{}}
		}
		rig.settle(300 * time.Millisecond)
		var recs []*recReq
		var p []string
		for _, r := range rig.take() {
			xff := r.values("X-Forwarded-For")
			var last string
			if len(xff) == 1 {
				last = xff[0][strings.LastIndex(xff[0], " ")+1:]
			}
			switch {
			case last == ip.String():
				recs = append(recs, r)
			case hostileIPRE.MatchString(last): // an earlier input's
			default:
				p = append(p, fmt.Sprintf("(a) the instance received a request without the gateway's X-Forwarded-For: %s", r))
			}
		}
		p = append(p, checkHostile(stream, ref, run, recs, ip.String())...)
		var b strings.Builder
		fmt.Fprintf(&b, "net/http parses %d requests, then stops at byte %d (head to %d): %s\n", len(ref.reqs), ref.next, ref.nextHeadEnd, ref.why)
		for i, rq := range ref.reqs {
			fmt.Fprintf(&b, "  %2d: bytes %d–%d (head to %d) %.200q, %d data bytes\n", i, rq.start, rq.end, rq.headEnd, stream[rq.start:rq.headEnd], len(rq.body))
		}
		return outcome{problems: p, stream: stream, run: run, recs: recs, extra: b.String()}
	})
}

// checkHostile: response i answers the stream's request i as net/http delimits it; an
// answer from the instance must match the instance's next recorded request, which must
// be that request. An answer of the gateway's own may follow a part of that request the
// gateway forwarded before it found it malformed (the instance sees it cut off and the
// connection closed: what it got are exactly the client's bytes). An answer with
// Connection: close is the last. The connection may also close without an answer after
// a request cut off mid-body. Nothing else may reach the instance.
//
// A reset ends the connection too: the gateway closes right after its answer to a
// malformed request, with the client's later bytes unread, so the kernel resets the
// connection and drops what it had not sent yet — the end of the previous answer, the
// gateway's own answer (RFC 9112 §9.6 asks a server to close its write side and drain
// instead). That is reported separately; here an answer cut off by the reset, and the
// answers it swallowed, are allowed — the requests they answer must still be the
// client's.
func checkHostile(stream []byte, ref *refPipe, run *pipeRun, recs []*recReq, ip string) []string {
	var p []string
	reset := errors.Is(run.end, syscall.ECONNRESET)
	// compare checks a complete request the instance got, as the stream's request i.
	compare := func(i int, rec *recReq) bool {
		if i >= len(ref.reqs) {
			p = append(p, fmt.Sprintf("(a) the instance received request %d, but net/http parses only %d requests from the stream (then: %s): %s", i, len(ref.reqs), ref.why, rec))
			return false
		}
		rq := ref.reqs[i]
		for _, q := range checkForwarded(rec, modelForward(string(stream[rq.start:rq.headEnd])), ip) {
			p = append(p, fmt.Sprintf("(a) request %d (bytes %d–%d): %s", i, rq.start, rq.end, q))
		}
		if rec.Method != rq.method {
			p = append(p, fmt.Sprintf("(a) request %d: method %q, net/http's %q", i, rec.Method, rq.method))
		}
		if raw := recBody(rec); !bytes.Equal(raw, stream[rq.headEnd:rq.end]) {
			p = append(p, fmt.Sprintf("(a) request %d: the instance got body bytes %.200q, net/http reads %.200q", i, raw, stream[rq.headEnd:rq.end]))
		} else if !bytes.Equal(rec.Body, rq.body) {
			p = append(p, fmt.Sprintf("(a) request %d: its data as the backend decoded it is %.200q, as net/http did %.200q", i, rec.Body, rq.body))
		}
		return true
	}
	// partial checks a request the instance got cut off, as the stream's request i.
	partial := func(i int, rec *recReq) {
		var start, headEnd int
		switch {
		case i < len(ref.reqs):
			start, headEnd = ref.reqs[i].start, ref.reqs[i].headEnd
		case i == len(ref.reqs) && ref.nextHeadEnd >= 0:
			start, headEnd = ref.next, ref.nextHeadEnd
		default:
			p = append(p, fmt.Sprintf("(a) the instance received (cut off) the head of request %d, which net/http does not parse as a request (%s): %s", i, ref.why, rec))
			return
		}
		for _, q := range checkForwarded(rec, modelForward(string(stream[start:headEnd])), ip) {
			if !strings.HasPrefix(q, "the backend could not follow") {
				p = append(p, fmt.Sprintf("(a) request %d, cut off: %s", i, q))
			}
		}
		if raw := recBody(rec); raw == nil || !bytes.HasPrefix(stream[headEnd:], raw) {
			p = append(p, fmt.Sprintf("(a) request %d, cut off: the instance got body bytes %.200q, which are not what the client sent after that head (%.200q)", i, raw, stream[headEnd:]))
		}
	}
	next, closed := 0, false
	for i, resp := range run.resps {
		if closed {
			p = append(p, fmt.Sprintf("(b) response %d came after an answer with Connection: close", i))
			break
		}
		closed = resp.close
		if resp.header.Get("X-Pipe-Backend") == "" { // the gateway's own answer
			if resp.status < 400 {
				p = append(p, fmt.Sprintf("(b) response %d is neither the instance's nor an error: %d %.200q", i, resp.status, resp.body))
			}
			if resp.headBody > 0 {
				p = append(p, fmt.Sprintf("(b) response %d, the gateway's own %d to a HEAD, is followed by a body of %d bytes (RFC 9110 §9.3.2: none may follow), which the client reads as the next response", i, resp.status, resp.headBody))
			}
			// What it forwarded of the request before it found it malformed; it closes
			// then (it keeps a connection only after answering a request it did not
			// forward at all).
			if resp.close && next < len(recs) && recs[next].Err != nil {
				partial(i, recs[next])
				next++
			}
			continue
		}
		if next >= len(recs) {
			p = append(p, fmt.Sprintf("(b) response %d is the instance's answer to %s, which is not one of this connection's requests", i, resp.header.Get("X-Req-Id")))
			break
		}
		rec := recs[next]
		next++
		raw := recBody(rec)
		if id, sha := resp.header.Get("X-Req-Id"), resp.header.Get("X-Body-Sha"); id != strconv.QuoteToASCII(rec.Target) || sha != bodySHA(raw) {
			p = append(p, fmt.Sprintf("(b) response %d answers %s (body %s), but the instance's request %d was %q (body %s)", i, id, sha, next-1, rec.Target, bodySHA(raw)))
			break
		}
		if !compare(i, rec) {
			break
		}
		status, body := planFor(rec.Target).expect(rec.Target, bodySHA(raw), ref.reqs[i].method)
		switch {
		case resp.status != status:
			p = append(p, fmt.Sprintf("(b) response %d: status %d, want the instance's %d", i, resp.status, status))
		case resp.err == nil && !bytes.Equal(resp.body, body):
			p = append(p, fmt.Sprintf("(b) response %d: body %.200q, want the instance's %.200q", i, resp.body, body))
		case resp.err != nil && !(errors.Is(resp.err, syscall.ECONNRESET) && bytes.HasPrefix(body, resp.body)):
			p = append(p, fmt.Sprintf("(b) response %d: body %.200q cut off (%v), want the instance's %.200q", i, resp.body, resp.err, body))
		}
	}
	for i := len(run.resps); next < len(recs); next, i = next+1, i+1 {
		rec := recs[next]
		switch {
		case rec.Err != nil:
			partial(i, rec)
			if next < len(recs)-1 {
				p = append(p, fmt.Sprintf("(a) the instance received requests after one cut off: %s", recs[next+1]))
				return p
			}
		case reset: // its answer went with the reset
			compare(i, rec)
		default:
			p = append(p, fmt.Sprintf("(b) the instance answered a request (%d) the client got no answer for: %s", next, rec))
		}
	}
	switch end := run.end; {
	case end == nil, reset: // closed
	case isTimeoutErr(end):
		p = append(p, fmt.Sprintf("(b) the gateway neither answered nor closed within %s of a connection the client half-closed", pipeDeadline))
	default:
		p = append(p, fmt.Sprintf("(b) after %d responses the client read what is not a response: %v", len(run.resps), end))
	}
	return p
}

// mutate flips, inserts and deletes bytes of the stream's heads and chunk framing (and
// now and then anywhere), or inserts whole lines that make framing ambiguous.
func mutate(s *fuzzSrc, st *pipeStream, host string) []byte {
	b := slices.Clone(st.b)
	type edit struct {
		at, del int
		ins     []byte
	}
	var edits []edit
	interesting := []byte("\r\n \t:;,=\"%@/?#-019afgxHT\x00\x7f\x80\xff\x0b\x0c")
	strs := []string{
		"\r\n", "\n", "\r", "\r\n\r\n", " ", "\t",
		"Transfer-Encoding: chunked\r\n", "Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding:  chunked \r\n",
		"Transfer-Encoding: identity\r\n", "Content-Length: 0\r\n", "Content-Length: 5\r\n", "Content-Length: 40000\r\n",
		"Content-Length: 5, 5\r\n", "Connection: close\r\n", "Connection: keep-alive\r\n", "Connection: upgrade\r\nUpgrade: pipe\r\n",
		"Expect: 100-continue\r\n", "Host: other.example\r\n", "Host: " + host + "\r\n", " chunked", ", chunked",
		"0\r\n\r\n", "5\r\nhello\r\n", "ffffffffffffffff\r\n", "GET /smuggled HTTP/1.1\r\nHost: " + host + "\r\n\r\n",
		"HTTP/1.0", " HTTP/1.1", "HEAD ", "X-Forwarded-For: 6.6.6.6\r\n", " ;x", `;ext="a"`, "\r\n X-Folded: yes",
		"Proxy-Connection: keep-alive\r\n", "Upgrade: h2c\r\n",
	}
	for range 1 + s.intn(4) {
		var at int
		inHead := -1
		switch r := s.intn(20); {
		case r < 12 || len(st.framing) == 0:
			inHead = s.intn(len(st.heads))
			h := st.heads[inHead]
			at = h[0] + s.intn(h[1]-h[0])
		case r < 18:
			f := st.framing[s.intn(len(st.framing))]
			at = f[0] + s.intn(f[1]-f[0])
		default:
			at = s.intn(len(b))
		}
		switch op := s.intn(8); op {
		case 0, 1:
			edits = append(edits, edit{at, 1, []byte{interesting[s.intn(len(interesting))]}})
		case 2:
			edits = append(edits, edit{at, 0, []byte{interesting[s.intn(len(interesting))]}})
		case 3:
			edits = append(edits, edit{at, 1, nil})
		case 4:
			edits = append(edits, edit{at, 1, []byte{b[at] ^ 1<<s.intn(8)}})
		case 5:
			ins := strs[s.intn(len(strs))]
			if inHead >= 0 && strings.HasSuffix(ins, "\r\n") { // a whole line: at a line's start
				if k := bytes.IndexByte(b[at:st.heads[inHead][1]], '\n'); k >= 0 && at+k+1 < st.heads[inHead][1] {
					at += k + 1
				}
			}
			edits = append(edits, edit{at, 0, []byte(ins)})
		case 6:
			edits = append(edits, edit{at, min(1+s.intn(8), len(b)-at), nil})
		case 7:
			c := b[at]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
				c ^= 0x20
			case c >= '0' && c <= '9':
				c = '0' + byte(s.intn(10))
			default:
				c = byte(s.intn(256))
			}
			edits = append(edits, edit{at, 1, []byte{c}})
		}
	}
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].at > edits[j].at })
	for _, e := range edits {
		if e.at > len(b) {
			continue
		}
		del := min(e.del, len(b)-e.at)
		b = slices.Concat(b[:e.at], e.ins, b[e.at+del:])
	}
	return b
}
