package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// Hostile HTTP/2 clients against a real gateway: each attack speaks raw HTTP/2 (x/net's
// Framer and hpack, where a normal client would not misbehave) on loopback, and each test
// asserts that what the attack can make the gateway hold is bounded — requests forwarded,
// header bytes read, streams open, time a stalled stream keeps an instance slot — and that
// afterwards a normal HTTP/2 client and a normal HTTP/1.1 client, each on a fresh
// connection, get 200 from the same service within 1 s.

// ---- a raw HTTP/2 client ----

// hhConn is one client connection speaking HTTP/2 frame by frame. Frames are written
// under mu (through bw); a collector goroutine reads them (collect).
type hhConn struct {
	c        net.Conn
	mu       sync.Mutex
	bw       *bufio.Writer
	fr       *http2.Framer
	enc      *hpack.Encoder
	hb       bytes.Buffer
	settings map[http2.SettingID]uint32 // the server's SETTINGS
}

// hhDial opens an HTTP/2 connection to addr: h2c with prior knowledge, or over TLS with
// tc (whose NextProtos should offer h2). settings are the client's SETTINGS.
func hhDial(t *testing.T, addr string, tc *tls.Config, settings ...http2.Setting) *hhConn {
	t.Helper()
	c := hhDialTCP(t, addr)
	if tc != nil {
		tlc := tls.Client(c, tc)
		_ = tlc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tlc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if p := tlc.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN chose %q", p)
		}
		c = tlc
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	return hhStart(t, c, c, settings...)
}

func hhDialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// hhStart speaks HTTP/2 on c, whose client preface was sent, reading from r: it sends
// SETTINGS, reads the server's and acknowledges them.
func hhStart(t *testing.T, c net.Conn, r io.Reader, settings ...http2.Setting) *hhConn {
	t.Helper()
	h := &hhConn{c: c, bw: bufio.NewWriterSize(c, 64<<10), settings: map[http2.SettingID]uint32{}}
	h.fr = http2.NewFramer(h.bw, r)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.enc = hpack.NewEncoder(&h.hb)
	if err := h.write(func(fr *http2.Framer) error { return fr.WriteSettings(settings...) }); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = sf.ForeachSetting(func(s http2.Setting) error { h.settings[s.ID] = s.Val; return nil })
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	if err := h.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() }); err != nil {
		t.Fatal(err)
	}
	return h
}

// write runs f on the framer and flushes, under the write lock.
func (h *hhConn) write(f func(*http2.Framer) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = h.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := f(h.fr); err != nil {
		return err
	}
	return h.bw.Flush()
}

// block encodes a GET's header block (with the connection's dynamic table): the
// pseudo-header fields, then extra.
func (h *hhConn) block(host, path string, extra ...hpack.HeaderField) []byte {
	h.hb.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"}, {Name: ":authority", Value: host}, {Name: ":path", Value: path}} {
		_ = h.enc.WriteField(f)
	}
	for _, f := range extra {
		_ = h.enc.WriteField(f)
	}
	return bytes.Clone(h.hb.Bytes())
}

// get sends a GET on stream id.
func (h *hhConn) get(id uint32, host, path string, extra ...hpack.HeaderField) error {
	blk := h.block(host, path, extra...)
	return h.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true})
	})
}

// sendBlock sends a request's header block on stream id as HEADERS and CONTINUATION
// frames of at most frame bytes.
func (h *hhConn) sendBlock(id uint32, blk []byte, frame int) error {
	first := blk[:min(frame, len(blk))]
	rest := blk[len(first):]
	err := h.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true, EndHeaders: len(rest) == 0})
	})
	for err == nil && len(rest) > 0 {
		frag := rest[:min(frame, len(rest))]
		rest = rest[len(frag):]
		err = h.write(func(fr *http2.Framer) error { return fr.WriteContinuation(id, len(rest) == 0, frag) })
	}
	return err
}

// hhStream is what the client got on one stream.
type hhStream struct {
	status int
	n      int    // DATA bytes
	data   []byte // the first 4 KiB of them
	ended  bool
	reset  bool
	rst    http2.ErrCode
}

// hhResult is what the collector read on a connection.
type hhResult struct {
	mu         sync.Mutex
	streams    map[uint32]*hhStream
	goAway     bool
	goAwayCode http2.ErrCode
	goAwayAt   time.Time
	lastStream uint32
	debug      string
	err        error // why reading ended; set once it did
	closedAt   time.Time
	done       chan struct{}
}

func (r *hhResult) stream(id uint32) *hhStream {
	s := r.streams[id]
	if s == nil {
		s = &hhStream{}
		r.streams[id] = s
	}
	return s
}

// collect reads the connection's frames until it ends, acknowledging SETTINGS and PING;
// refund returns the flow-control credit of every DATA frame.
func (h *hhConn) collect(refund bool) *hhResult {
	r := &hhResult{streams: map[uint32]*hhStream{}, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				r.mu.Lock()
				r.err, r.closedAt = err, time.Now()
				r.mu.Unlock()
				return
			}
			var reply func(*http2.Framer) error
			r.mu.Lock()
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				s := r.stream(f.StreamID)
				if st, err := strconv.Atoi(f.PseudoValue("status")); err == nil && s.status == 0 {
					s.status = st
				}
				s.ended = s.ended || f.StreamEnded()
			case *http2.DataFrame:
				s := r.stream(f.StreamID)
				n := len(f.Data())
				s.n += n
				if len(s.data) < 4096 {
					s.data = append(s.data, f.Data()[:min(n, 4096-len(s.data))]...)
				}
				s.ended = s.ended || f.StreamEnded()
				if refund && n > 0 {
					id, ended := f.StreamID, s.ended
					reply = func(fr *http2.Framer) error {
						if err := fr.WriteWindowUpdate(0, uint32(n)); err != nil || ended {
							return err
						}
						return fr.WriteWindowUpdate(id, uint32(n))
					}
				}
			case *http2.RSTStreamFrame:
				s := r.stream(f.StreamID)
				s.reset, s.rst = true, f.ErrCode
			case *http2.GoAwayFrame:
				if !r.goAway {
					r.goAway, r.goAwayCode, r.lastStream, r.goAwayAt = true, f.ErrCode, f.LastStreamID, time.Now()
					r.debug = string(f.DebugData())
				}
			case *http2.SettingsFrame:
				if !f.IsAck() {
					reply = func(fr *http2.Framer) error { return fr.WriteSettingsAck() }
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					data := f.Data
					reply = func(fr *http2.Framer) error { return fr.WritePing(true, data) }
				}
			}
			r.mu.Unlock()
			if reply != nil {
				_ = h.write(reply)
			}
		}
	}()
	return r
}

// snap returns a copy of what stream id got so far.
func (r *hhResult) snap(id uint32) hhStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.streams[id]; s != nil {
		return *s
	}
	return hhStream{}
}

// waitFor polls cond (called under the lock) until it holds or d passes.
func (r *hhResult) waitFor(d time.Duration, cond func(*hhResult) bool) bool {
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hhClosed: the connection ended (read error: EOF or reset).
func hhClosed(r *hhResult) bool { return r.err != nil }

// hhStopped: the server sent GOAWAY or the connection ended.
func hhStopped(r *hhResult) bool { return r.goAway || r.err != nil }

// refused reports whether stream id was turned away: answered 4xx, reset, cut off by a
// GOAWAY that does not cover it or that reports a connection error, or left unanswered
// on a closed connection.
func (r *hhResult) refused(id uint32) bool {
	s := r.streams[id]
	switch {
	case s != nil && s.status >= 400 && s.status < 500 && s.ended, s != nil && s.reset:
		return true
	case r.goAway && (r.lastStream < id || r.goAwayCode != http2.ErrCodeNo):
		return true // not processed, or the connection failed
	}
	return r.err != nil && (s == nil || s.status == 0)
}

// outcome describes how stream id ended, for messages.
func (r *hhResult) outcome(id uint32) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	if s := r.streams[id]; s != nil {
		if s.status != 0 {
			parts = append(parts, fmt.Sprintf("status %d (%d body bytes, ended %v)", s.status, s.n, s.ended))
		}
		if s.reset {
			parts = append(parts, "RST_STREAM "+s.rst.String())
		}
	}
	if r.goAway {
		parts = append(parts, fmt.Sprintf("GOAWAY %v (last stream %d) %q", r.goAwayCode, r.lastStream, r.debug))
	}
	if r.err != nil {
		parts = append(parts, "connection ended: "+r.err.Error())
	}
	if len(parts) == 0 {
		return "nothing yet"
	}
	return strings.Join(parts, "; ")
}

// ---- the normal clients, gauges and metrics ----

// hhOthersServed checks that a normal HTTP/2 client (h2c prior knowledge, or ALPN h2 over
// TLS when pki is set) and a normal HTTP/1.1 client, each on a fresh connection, get 200
// from svc within 1 s.
func hhOthersServed(t *testing.T, g *gateway.Gateway, svc string, pki *testPKI) {
	t.Helper()
	d := &net.Dialer{Timeout: time.Second}
	scheme := "http"
	var tc *tls.Config
	if pki != nil {
		scheme = "https"
		tc = &tls.Config{RootCAs: pki.pool}
	}
	var p http.Protocols
	if pki == nil {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
	}
	h2 := &http.Transport{Protocols: &p, TLSClientConfig: tc,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", g.PublicAddr())
		}}
	var h1tc *tls.Config
	if pki != nil {
		h1tc = &tls.Config{RootCAs: pki.pool, NextProtos: []string{"http/1.1"}}
	}
	h1 := &http.Transport{DisableKeepAlives: true, TLSClientConfig: h1tc,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", g.PublicAddr())
		}}
	defer h2.CloseIdleConnections()
	defer h1.CloseIdleConnections()
	for _, c := range []struct {
		proto int
		rt    http.RoundTripper
	}{{2, h2}, {1, h1}} {
		path := fmt.Sprintf("/ok/http%d", c.proto)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, "GET", scheme+"://"+host(svc)+path, nil)
		resp, err := c.rt.RoundTrip(req)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		took := time.Since(start)
		cancel()
		switch {
		case err != nil:
			t.Errorf("a normal HTTP/%d client after the attack: %v (after %v)", c.proto, err, took)
		case resp.StatusCode != 200 || resp.ProtoMajor != c.proto || string(body) != path:
			t.Errorf("a normal HTTP/%d client after the attack: %d over %s %q", c.proto, resp.StatusCode, resp.Proto, body)
		case took > time.Second:
			t.Errorf("a normal HTTP/%d client after the attack waited %v", c.proto, took)
		}
	}
}

// hhQuiet waits until the gateway holds no request of rev (in flight, queued or held) and
// returns how long that took; false when it still did after within.
func hhQuiet(t *testing.T, g *gateway.Gateway, rev string, within time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	for {
		if gaugeOf(t, g, rev).Concurrency() == 0 {
			return time.Since(start), true
		}
		if time.Since(start) > within {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hhCounters returns the samples of a metric on the admin /metrics by their label text,
// e.g. `type="conn_PROTOCOL_ERROR_…"`.
func hhCounters(t *testing.T, g *gateway.Gateway, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range strings.Split(adminGet(t, g, "/metrics"), "\n") {
		rest, ok := strings.CutPrefix(l, name+"{")
		if !ok {
			continue
		}
		labels, v, ok := strings.Cut(rest, "} ")
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); ok && err == nil {
			out[labels] = f
		}
	}
	return out
}

// hhGrew lists the samples that grew between two readings.
func hhGrew(before, after map[string]float64) []string {
	var out []string
	for k, v := range after {
		if v > before[k] {
			out = append(out, fmt.Sprintf("%s +%g", k, v-before[k]))
		}
	}
	sort.Strings(out)
	return out
}

// hhSmallBuffer is the receive buffer of a client that reads nothing: small, so the
// gateway's writes stall soon, but above loopback's MSS (64 KiB), or the client's own TCP
// wedges.
const hhSmallBuffer = 128 << 10

// hhCloseResponse is a 200 with body after which the instance closes the connection, so
// no kept-alive connection (and no backend goroutine) outlives the request.
func hhCloseResponse(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
}

// hhRequests returns the backend's requests whose target starts with prefix.
func hhRequests(be *recBackend, prefix string) []*recReq {
	var out []*recReq
	for _, r := range be.requests() {
		if strings.HasPrefix(r.Target, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// ---- 1. rapid reset ----

// CVE-2023-44487: one connection sends 20 000 HEADERS+RST_STREAM pairs as fast as it can,
// for an instance that answers in 200 ms. The gateway stays up; x/net runs at most
// MaxConcurrentStreams (250) handlers per connection and closes one that queues more than
// four times as many (GOAWAY ENHANCE_YOUR_CALM): the instance never has more than 250 at
// once, at most 250 per 200 ms the connection lived, and, when the connection is closed
// that way, at most 10% of them (measured: 250, 1.2%, on a quiet machine; 597 on a
// connection a starved machine took 2.2 s to close). Once the connection closes every
// gauge returns to 0 within 2 s and the goroutines to the baseline.
func TestH2HostileRapidReset(t *testing.T) {
	const h2MaxStreams = 250
	const svc, pairs, slow = "h2h-rapid-reset", 20000, 200 * time.Millisecond
	var cur, peak atomic.Int64
	be := newRecBackend(t, serveEach(func(c *recConn, r *recReq) bool {
		if !strings.HasPrefix(r.Target, "/rr/") {
			return echoTarget(c, r)
		}
		n := cur.Add(1)
		defer cur.Add(-1)
		for m := peak.Load(); n > m && !peak.CompareAndSwap(m, n); m = peak.Load() {
		}
		select {
		case <-time.After(slow):
		case <-c.b.done:
			return false
		}
		_ = c.write(hhCloseResponse(r.Target))
		return false
	}))
	g := routeBackend(t, svc, be, nil)
	hhOthersServed(t, g, svc, nil)
	errsBefore := hhCounters(t, g, "rouse_gateway_http2_errors_total")
	time.Sleep(100 * time.Millisecond) // let the normal clients' goroutines end
	base := runtime.NumGoroutine()

	h := hhDial(t, g.PublicAddr(), nil)
	res := h.collect(false)
	start := time.Now()
	sent := 0
	var werr error
	h.mu.Lock()
	_ = h.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < pairs && werr == nil; i++ {
		id := uint32(2*i + 1)
		blk := h.block(host(svc), "/rr/"+strconv.Itoa(i))
		werr = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true})
		if werr == nil {
			werr = h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		if werr == nil && (i%64 == 63 || i == pairs-1) {
			if werr = h.bw.Flush(); werr == nil {
				sent = i + 1
			}
		}
	}
	h.mu.Unlock()
	sending := time.Since(start)
	res.waitFor(3*time.Second, hhClosed)
	h.c.Close()
	<-res.done
	lived := time.Since(start)
	t.Logf("attack: %d of %d pairs written in %v (write error: %v); the connection ended after %v; the server: %s", sent, pairs, sending, werr, lived.Round(time.Millisecond), res.outcome(1<<31-1))

	quiet, ok := hhQuiet(t, g, svc+"-00001", 2*time.Second)
	if !ok {
		t.Errorf("2 s after the attack connection closed the gateway still holds requests: %+v", gaugeOf(t, g, svc+"-00001"))
	}
	forwarded := len(hhRequests(be, "/rr/"))
	t.Logf("the instance got %d of the attack's requests (%.1f%% of %d), at most %d at once; gauges at 0 %v after the close", forwarded, 100*float64(forwarded)/pairs, pairs, peak.Load(), quiet)
	// Without x/net's limit on handlers per connection every pair would start a request
	// at once. With it: at most MaxConcurrentStreams at a time, so at most that many per
	// 200 ms the connection lived; and the connection closes once more than 4 ×
	// MaxConcurrentStreams reset streams wait, which at full speed leaves about one round
	// (a machine short of CPU takes longer to read the flood and close, and each 200 ms
	// of that lets another round through: the per-time bound is the one that holds).
	if p := peak.Load(); p > h2MaxStreams {
		t.Errorf("the instance had %d of one connection's reset streams at once, limit %d", p, h2MaxStreams)
	}
	if most := h2MaxStreams * int(1+lived/slow); forwarded > most {
		t.Errorf("the instance got %d requests from reset streams on a connection open %v: more than %d per %v", forwarded, lived, h2MaxStreams, slow)
	}
	if res.goAway && res.goAwayCode == http2.ErrCodeEnhanceYourCalm {
		if forwarded > pairs/10 {
			t.Errorf("the instance got %d requests from %d reset streams: want at most 10%%", forwarded, pairs)
		}
	} else {
		t.Logf("no ENHANCE_YOUR_CALM (the gateway read the pairs slower than they came: a slow build?): the per-time bound applies")
	}
	var now int
	ok = res.waitFor(3*time.Second, func(*hhResult) bool { now = runtime.NumGoroutine(); return now <= base+20 })
	t.Logf("goroutines: %d before the attack, %d after", base, now)
	if !ok {
		t.Errorf("goroutines: %d before the attack, still %d 3 s after", base, now)
	}
	if res.goAway && res.goAwayCode != http2.ErrCodeNo {
		if grew := hhGrew(errsBefore, hhCounters(t, g, "rouse_gateway_http2_errors_total")); len(grew) == 0 {
			t.Errorf("GOAWAY %v, but rouse_gateway_http2_errors_total did not grow", res.goAwayCode)
		} else {
			t.Logf("rouse_gateway_http2_errors_total: %v", grew)
		}
	}
	hhOthersServed(t, g, svc, nil)
}

// ---- 2. CONTINUATION flood ----

// CVE-2024-27316 class (CVE-2023-45288 in Go): a header block that never ends. With
// header bytes the gateway stops reading once they pass MaxHeaderBytes (x/net: the next
// CONTINUATION after the limit is a connection error): GOAWAY before 1 MiB was accepted
// (measured: 49 KB, 32 KiB of fields and the frame they ran out in), within 1 s. Empty
// CONTINUATION frames add no header bytes, so no size limit applies: only IdleTimeout
// (here 2 s) closes that connection.
func TestH2HostileContinuationFlood(t *testing.T) {
	const svc, idle = "h2h-continuation", 2 * time.Second
	be := newRecBackend(t, serveEach(echoTarget))
	g := routeBackend(t, svc, be, func(c *gateway.Config) { c.IdleTimeout = idle })

	t.Run("header bytes", func(t *testing.T) {
		// Distinct never-indexed fields: every byte is header data.
		var flood bytes.Buffer
		fe := hpack.NewEncoder(&flood)
		for i := 0; flood.Len() < 2<<20; i++ {
			_ = fe.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-flood-%06d", i), Value: strings.Repeat("v", 100), Sensitive: true})
		}
		h := hhDial(t, g.PublicAddr(), nil)
		res := h.collect(false)
		first := h.block(host(svc), "/flood")
		start := time.Now()
		err := h.write(func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true})
		})
		accepted := len(first)
		const frame = 16 << 10
		for off := 0; off < flood.Len() && err == nil; off += frame {
			if res.waitFor(2*time.Millisecond, hhStopped) { // paced: the server can answer before the next frame
				break
			}
			frag := flood.Bytes()[off:min(off+frame, flood.Len())]
			if err = h.write(func(fr *http2.Framer) error { return fr.WriteContinuation(1, false, frag) }); err == nil {
				accepted += len(frag)
			}
		}
		stopped := res.waitFor(time.Second, hhStopped)
		if !stopped {
			t.Fatalf("the server kept reading the header block: %d bytes and no GOAWAY or close (write error %v)", accepted, err)
		}
		res.mu.Lock()
		at := res.goAwayAt
		if at.IsZero() {
			at = res.closedAt
		}
		res.mu.Unlock()
		res.waitFor(2*time.Second, hhClosed)
		t.Logf("%d header block bytes written before the server stopped, %v after the first; %s; write error %v", accepted, at.Sub(start), res.outcome(1), err)
		if accepted >= 1<<20 {
			t.Errorf("the server read %d bytes of one header block before closing", accepted)
		}
		if d := at.Sub(start); d > time.Second {
			t.Errorf("the server closed after %v", d)
		}
		if r := hhRequests(be, "/flood"); len(r) > 0 {
			t.Errorf("the instance got the flooded request: %s", r[0])
		}
	})

	t.Run("empty frames", func(t *testing.T) {
		h := hhDial(t, g.PublicAddr(), nil)
		res := h.collect(false)
		first := h.block(host(svc), "/flood-empty")
		start := time.Now()
		err := h.write(func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true})
		})
		frames := 0
		for err == nil && !res.waitFor(time.Millisecond, hhStopped) && time.Since(start) < idle+3*time.Second {
			h.mu.Lock()
			for i := 0; i < 1000 && err == nil; i++ {
				err = h.fr.WriteContinuation(1, false, nil)
			}
			if err == nil {
				err = h.bw.Flush()
			}
			h.mu.Unlock()
			if err == nil {
				frames += 1000
			}
		}
		stopped := res.waitFor(time.Second, hhStopped)
		took := time.Since(start)
		res.waitFor(2*time.Second, hhClosed)
		t.Logf("%d empty CONTINUATION frames (%d bytes) written in %v before the server stopped: %s", frames, 9*frames, took, res.outcome(1))
		if !stopped || took > idle+1500*time.Millisecond {
			t.Errorf("a header block of empty CONTINUATION frames was still read %v after it began (IdleTimeout %v)", took, idle)
		}
		if r := hhRequests(be, "/flood-empty"); len(r) > 0 {
			t.Errorf("the instance got the flooded request: %s", r[0])
		}
	})
	hhOthersServed(t, g, svc, nil)
}

// ---- 3. huge HPACK header blocks ----

// Header blocks over MaxHeaderBytes (32 KiB; x/net allows 32 KiB + 320 of decoded fields):
// one 64 KiB field, 200 fields summing to 60 KiB (in 16 KiB frames and in one frame), and
// HPACK bombs — one 4 KiB field put into the dynamic table by a normal request, then
// referenced 500 and 30 000 times (1-byte references decoding to 2 MB and 120 MB) — are
// each refused (431, RST_STREAM or a connection error) within 1 s; the instance never
// sees them.
func TestH2HostileHugeHeaders(t *testing.T) {
	const svc = "h2h-huge-headers"
	be := newRecBackend(t, serveEach(echoTarget))
	g := routeBackend(t, svc, be, nil)

	// refusedWithin: the stream is refused within 1 s and its path never reached the
	// instance.
	refusedWithin := func(t *testing.T, res *hhResult, id uint32, path string, start time.Time) {
		t.Helper()
		ok := res.waitFor(time.Second, func(r *hhResult) bool { return r.refused(id) })
		t.Logf("after %v: %s", time.Since(start).Round(time.Millisecond), res.outcome(id))
		if !ok {
			t.Errorf("not refused within 1 s: %s", res.outcome(id))
		}
		time.Sleep(50 * time.Millisecond)
		if r := hhRequests(be, path); len(r) > 0 {
			t.Errorf("the instance got %s with %d header lines", r[0].Line, len(r[0].Lines))
		}
	}
	many := func() []hpack.HeaderField {
		var f []hpack.HeaderField
		for i := range 200 {
			f = append(f, hpack.HeaderField{Name: fmt.Sprintf("x-f-%03d", i), Value: fmt.Sprintf("%03d", i) + strings.Repeat("m", 297), Sensitive: true})
		}
		return f
	}

	for _, tc := range []struct {
		name  string
		extra []hpack.HeaderField
		frame int
	}{
		{"one 64 KiB field", []hpack.HeaderField{{Name: "x-huge", Value: strings.Repeat("h", 64<<10)}}, 16 << 10},
		{"many fields, 16 KiB frames", many(), 16 << 10},
		{"many fields, one frame", many(), 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hhDial(t, g.PublicAddr(), nil)
			res := h.collect(false)
			path := "/huge/" + strings.ReplaceAll(tc.name, " ", "-")
			blk := h.block(host(svc), path, tc.extra...)
			start := time.Now()
			err := h.sendBlock(1, blk, tc.frame)
			t.Logf("a header block of %d bytes (write error %v)", len(blk), err)
			refusedWithin(t, res, 1, path, start)
		})
	}

	for _, refs := range []int{500, 30000} {
		t.Run(fmt.Sprintf("dynamic table bomb %d", refs), func(t *testing.T) {
			h := hhDial(t, g.PublicAddr(), nil)
			res := h.collect(false)
			big := hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 4000)} // 4037 bytes: fits the 4096-byte table
			seed := "/amp/seed-" + strconv.Itoa(refs)
			if err := h.get(1, host(svc), seed, big); err != nil {
				t.Fatal(err)
			}
			if !res.waitFor(time.Second, func(r *hhResult) bool { s := r.streams[1]; return s != nil && s.ended }) {
				t.Fatalf("the seeding request: %s", res.outcome(1))
			}
			if s := res.snap(1); s.status != 200 {
				t.Fatalf("the seeding request (one 4 KiB field): %s", res.outcome(1))
			}
			// The bomb: the pseudo-header fields without indexing (the table keeps x-big as
			// its newest entry), then the table entry by reference, refs times.
			h.hb.Reset()
			_ = h.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
			_ = h.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
			_ = h.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: host(svc), Sensitive: true})
			path := "/amp/bomb-" + strconv.Itoa(refs)
			_ = h.enc.WriteField(hpack.HeaderField{Name: ":path", Value: path, Sensitive: true})
			pre := h.hb.Len()
			for range refs {
				_ = h.enc.WriteField(big)
			}
			blk := bytes.Clone(h.hb.Bytes())
			if per := (len(blk) - pre) / refs; per != 1 {
				t.Fatalf("a reference to the table entry took %d bytes, want 1", per)
			}
			t.Logf("a header block of %d bytes decoding to %d bytes of fields", len(blk), refs*int(big.Size()))
			start := time.Now()
			if err := h.sendBlock(3, blk, 1<<20); err != nil {
				t.Logf("write: %v", err)
			}
			refusedWithin(t, res, 3, path, start)
			if n := len(hhRequests(be, seed)); n != 1 {
				t.Errorf("the instance got the seeding request %d times, want 1", n)
			}
		})
	}
	hhOthersServed(t, g, svc, nil)
}

// ---- 4. stream-count abuse ----

// One connection opens 1000 streams at once, for an instance that holds every request
// until the test lets it go. The gateway advertises SETTINGS_MAX_CONCURRENT_STREAMS 250,
// refuses the streams over it (RST_STREAM), and the instance never has more than 250 of
// them at once; other clients are served meanwhile; once released all 250 get 200 and the
// gauges return to 0.
func TestH2HostileStreamCount(t *testing.T) {
	const svc, streams, limit = "h2h-streams", 1000, 250
	release := make(chan struct{})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	var cur, peak, arrived atomic.Int64
	be := newRecBackend(t, serveEach(func(c *recConn, r *recReq) bool {
		if !strings.HasPrefix(r.Target, "/hold/") {
			return echoTarget(c, r)
		}
		arrived.Add(1)
		n := cur.Add(1)
		for m := peak.Load(); n > m && !peak.CompareAndSwap(m, n); m = peak.Load() {
		}
		defer cur.Add(-1)
		select {
		case <-release:
		case <-c.b.done:
			return false
		}
		_ = c.write(hhCloseResponse(r.Target))
		return false
	}))
	g := routeBackend(t, svc, be, nil)
	t.Cleanup(letGo) // before the backend stops

	h := hhDial(t, g.PublicAddr(), nil)
	if v, ok := h.settings[http2.SettingMaxConcurrentStreams]; !ok || v != limit {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS: %d (sent %v), want %d", v, ok, limit)
	}
	res := h.collect(true)
	h.mu.Lock()
	var werr error
	for i := 0; i < streams && werr == nil; i++ {
		blk := h.block(host(svc), "/hold/"+strconv.Itoa(i))
		werr = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: blk, EndStream: true, EndHeaders: true})
	}
	if werr == nil {
		werr = h.bw.Flush()
	}
	h.mu.Unlock()
	if werr != nil {
		t.Fatal(werr)
	}
	resets := func(r *hhResult) (n int, codes map[http2.ErrCode]int) {
		codes = map[http2.ErrCode]int{}
		for _, s := range r.streams {
			if s.reset {
				n++
				codes[s.rst]++
			}
		}
		return n, codes
	}
	// Settle: every stream is either at the instance or reset.
	res.waitFor(3*time.Second, func(r *hhResult) bool {
		n, _ := resets(r)
		return int(arrived.Load())+n >= streams || hhStopped(r)
	})
	time.Sleep(200 * time.Millisecond) // anything still on its way arrives
	gauge := gaugeOf(t, g, svc+"-00001")
	res.mu.Lock()
	nReset, codes := resets(res)
	res.mu.Unlock()
	t.Logf("of %d streams: %d reached the instance (at most %d at once), %d reset %v; gauge in flight %d; %s", streams, arrived.Load(), peak.Load(), nReset, codes, gauge.InFlight, res.outcome(1<<31-1))
	if p := peak.Load(); p > limit {
		t.Errorf("the instance had %d of one connection's requests at once, limit %d", p, limit)
	}
	if a := arrived.Load(); a > limit || a < limit*8/10 {
		t.Errorf("%d streams reached the instance, want at most %d (and not far fewer: the limit is what binds)", a, limit)
	}
	if gauge.InFlight > limit {
		t.Errorf("the gauge counts %d in flight", gauge.InFlight)
	}
	if !res.goAway && nReset < streams-limit {
		t.Errorf("%d streams were reset, want at least %d", nReset, streams-limit)
	}
	hhOthersServed(t, g, svc, nil) // while the attack holds its 250

	letGo()
	held := int(arrived.Load())
	ok := res.waitFor(2*time.Second, func(r *hhResult) bool {
		n := 0
		for _, s := range r.streams {
			if s.ended && s.status == 200 {
				n++
			}
		}
		return n >= held
	})
	if !ok {
		t.Errorf("the %d held streams did not all get 200 within 2 s of the release", held)
	}
	if _, ok := hhQuiet(t, g, svc+"-00001", 2*time.Second); !ok {
		t.Errorf("the gateway still holds requests: %+v", gaugeOf(t, g, svc+"-00001"))
	}
	hhOthersServed(t, g, svc, nil)
}

// ---- 5. flow-control and control-frame abuse ----

// With WriteTimeout 2 s: a client that never lets a large response through — its stream
// window 0 and no WINDOW_UPDATE, or a huge window and a socket it never reads — loses its
// stream (or connection) within WriteTimeout and a little, and the instance slot is
// released (gauges to 0). PING and SETTINGS floods from a client that reads none of the
// acknowledgements leave the gateway's memory as it was: x/net closes a connection with
// more than 10 000 control frames queued (PING), or owes one ACK for any number of
// SETTINGS.
func TestH2HostileWindow(t *testing.T) {
	const svc, wt = "h2h-window", 2 * time.Second
	big := okResponse(strings.Repeat("w", 32<<20))
	be := newRecBackend(t, serveEach(func(c *recConn, r *recReq) bool {
		if strings.HasPrefix(r.Target, "/big/") {
			return c.write(big) == nil
		}
		return echoTarget(c, r)
	}))
	g := routeBackend(t, svc, be, func(c *gateway.Config) { c.WriteTimeout = wt })
	rev := svc + "-00001"

	// stalled waits until the instance got path, then until the gateway holds nothing,
	// at most bound.
	stalled := func(t *testing.T, path string, bound time.Duration) {
		t.Helper()
		var at time.Time
		for start := time.Now(); at.IsZero() && time.Since(start) < 2*time.Second; time.Sleep(5 * time.Millisecond) {
			if len(hhRequests(be, path)) > 0 {
				at = time.Now()
			}
		}
		if at.IsZero() {
			t.Fatalf("the instance never got %s", path)
		}
		took, ok := hhQuiet(t, g, rev, bound)
		t.Logf("the slot was released %v after the instance got the request", took.Round(10*time.Millisecond))
		if !ok {
			t.Errorf("a stalled client still holds the instance slot %v after the request reached it (WriteTimeout %v, bound %v): %+v", took.Round(10*time.Millisecond), wt, bound, gaugeOf(t, g, rev))
		}
	}

	t.Run("zero window", func(t *testing.T) {
		h := hhDial(t, g.PublicAddr(), nil, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		res := h.collect(false)
		if err := h.get(1, host(svc), "/big/zero"); err != nil {
			t.Fatal(err)
		}
		// Nothing is written to the socket, so x/net's WriteByteTimeout never runs: only a
		// per-stream write deadline bounds this.
		stalled(t, "/big/zero", wt+time.Second)
		t.Logf("the client: %s", res.outcome(1))
		h.c.Close()
		if _, ok := hhQuiet(t, g, rev, 2*time.Second); !ok {
			t.Errorf("even with the connection closed the gateway holds the request: %+v", gaugeOf(t, g, rev))
		}
	})

	t.Run("unread socket", func(t *testing.T) {
		c := hhDialTCP(t, g.PublicAddr())
		_ = c.(*net.TCPConn).SetReadBuffer(hhSmallBuffer)
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		h := hhStart(t, c, c, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
		if err := h.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<30) }); err != nil {
			t.Fatal(err)
		}
		if err := h.get(1, host(svc), "/big/unread"); err != nil {
			t.Fatal(err)
		}
		// Nothing reads the socket meanwhile. WriteByteTimeout fails a write that made no
		// progress for WriteTimeout; the kernel growing its send buffer counts as
		// progress (measured: released after 3 × WriteTimeout).
		stalled(t, "/big/unread", 4*wt+time.Second)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := io.Copy(io.Discard, c)
		t.Logf("the client then read %d bytes and %v", n, err)
	})

	// flood writes frames with frame until the connection fails, most were written or
	// 3 s passed, reading nothing.
	flood := func(h *hhConn, most int, frame func(fr *http2.Framer, i int) error) (sent int, took time.Duration, err error) {
		start := time.Now()
		h.mu.Lock()
		defer h.mu.Unlock()
		_ = h.c.SetWriteDeadline(start.Add(3500 * time.Millisecond))
		for sent < most && err == nil && time.Since(start) < 3*time.Second {
			for i := 0; i < 1000 && err == nil; i++ {
				err = frame(h.fr, sent+i)
			}
			if err == nil {
				if err = h.bw.Flush(); err == nil {
					sent += 1000
				}
			}
		}
		return sent, time.Since(start), err
	}
	dialUnread := func(t *testing.T) *hhConn {
		c := hhDialTCP(t, g.PublicAddr())
		_ = c.(*net.TCPConn).SetReadBuffer(hhSmallBuffer)
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		return hhStart(t, c, c)
	}

	// heapGrowth runs f and returns how much the live heap of the test process (the
	// gateway's) grew.
	heapGrowth := func(f func()) int64 {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		f()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		return int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	}
	for _, fl := range []struct {
		name  string
		frame func(fr *http2.Framer, i int) error
	}{
		// Each PING needs its own PING ACK: unread, they queue, and x/net closes the
		// connection when more than 10 000 control frames wait.
		{"PING flood", func(fr *http2.Framer, i int) error {
			var d [8]byte
			binary.BigEndian.PutUint64(d[:], uint64(i))
			return fr.WritePing(false, d)
		}},
		// x/net owes one SETTINGS ACK however many SETTINGS came before it could send it:
		// nothing queues, and the connection may stay.
		{"SETTINGS flood", func(fr *http2.Framer, i int) error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		}},
	} {
		t.Run(fl.name, func(t *testing.T) {
			h := dialUnread(t)
			var sent int
			var took time.Duration
			var err error
			grew := heapGrowth(func() { sent, took, err = flood(h, 3_000_000, fl.frame) })
			how := "the connection is still open"
			switch {
			case err != nil && isTimeoutErr(err):
				// The client's own TCP stopped sending (its receive queue overflowed):
				// the gateway read all it got.
				how = "the client's writes stalled"
			case err != nil:
				how = "the gateway closed the connection"
			}
			t.Logf("%d frames written in %v (%v): %s; heap %+d KiB", sent, took.Round(time.Millisecond), err, how, grew>>10)
			// Without the limit, every unread acknowledgement would wait in memory: tens of
			// bytes each, hundreds of thousands of them.
			if grew > 8<<20 {
				t.Errorf("the heap grew by %d MiB during a flood of %d frames", grew>>20, sent)
			}
		})
	}
	hhOthersServed(t, g, svc, nil)
}

// ---- 6. h2c smuggling ----

// hhRegister serves svc from be alone, as routeBackend does, without starting a gateway.
func hhRegister(t *testing.T, svc string, be *recBackend) string {
	t.Helper()
	rev := svc + "-00001"
	cfg := revmeta.Defaults(ns, svc, rev)
	cfg.Timeout = 10 * time.Second
	registerRevision(t, cfg, be.port())
	setRoute(t, svc, store.RouteTarget{Revision: rev, Percent: 100})
	return rev
}

// hhTap keeps what a naive instance received through a tunnel.
type hhTap struct {
	mu sync.Mutex
	b  []byte
}

func (p *hhTap) add(b []byte) {
	p.mu.Lock()
	p.b = append(p.b, b...)
	p.mu.Unlock()
}

func (p *hhTap) bytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.b)
}

// hhNaive is an instance that accepts any Upgrade (101) and then keeps whatever comes
// through the tunnel: the instance h2c smuggling needs. Other requests get their target.
func hhNaive(tap *hhTap) func(*recConn) {
	return serveEach(func(c *recConn, r *recReq) bool {
		if len(r.values("Upgrade")) == 0 {
			return echoTarget(c, r)
		}
		c.b.note("101")
		if c.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+r.values("Upgrade")[0]+"\r\n\r\n") != nil {
			return false
		}
		_ = c.c.SetReadDeadline(time.Now().Add(time.Second))
		b, _ := io.ReadAll(c.br)
		tap.add(b)
		return false
	})
}

// hhUpgradeHead is an HTTP/1.1 request head asking for h2c (RFC 7540 §3.2).
func hhUpgradeHead(method, path, host, extra string) string {
	var s [6]byte
	binary.BigEndian.PutUint16(s[:], uint16(http2.SettingInitialWindowSize))
	binary.BigEndian.PutUint32(s[2:], 1<<20)
	return method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: " +
		base64.RawURLEncoding.EncodeToString(s[:]) + "\r\nX-Keep: yes\r\n" + extra + "\r\n"
}

// hhNoUpgradeFields checks that no request the instance got carries the upgrade's fields
// or HTTP/2 bytes, and that it never answered 101.
func hhNoUpgradeFields(t *testing.T, name string, be *recBackend) {
	t.Helper()
	for _, r := range be.requests() {
		for _, f := range []string{"Upgrade", "HTTP2-Settings", "Connection"} {
			if v := r.values(f); len(v) > 0 {
				t.Errorf("instance %s got %s with %s: %q", name, r.Line, f, v)
			}
		}
		if r.Err != nil || r.Proto != "HTTP/1.1" || strings.HasPrefix(r.Line, "PRI") {
			t.Errorf("instance %s got %s", name, r)
		}
	}
	if n := be.event("101"); n > 0 {
		t.Errorf("instance %s answered 101 %d times: an upgrade reached it", name, n)
	}
}

// BishopFox h2c smuggling: an HTTP/1.1 request with Upgrade: h2c on the plain listener, for
// a service whose instance would accept any upgrade. The gateway terminates the upgrade
// itself: the instance never gets Upgrade, HTTP2-Settings or a 101 exchange, and every
// stream the client then opens on that connection is routed by its own :authority (another
// service, 404 for an unknown host, refused with a connection-specific field) — nothing is
// tunnelled. Go's httputil.ReverseProxy, for comparison, forwards Upgrade: h2c and
// tunnels on the instance's 101. On the TLS listener Upgrade: h2c is not honoured at all.
func TestH2HostileH2CSmuggling(t *testing.T) {
	const svcA, svcB = "h2h-smuggle-a", "h2h-smuggle-b"
	tapA, tapB := &hhTap{}, &hhTap{}
	beA, beB := newRecBackend(t, hhNaive(tapA)), newRecBackend(t, hhNaive(tapB))
	revA, revB := hhRegister(t, svcA, beA), hhRegister(t, svcB, beB)
	g := startGateway(t, nil)
	t.Cleanup(beA.stop)
	t.Cleanup(beB.stop)
	waitReady(t, g, revA, 1)
	waitReady(t, g, revB, 1)

	t.Run("plain listener", func(t *testing.T) {
		c := hhDialTCP(t, g.PublicAddr())
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, hhUpgradeHead("GET", "/up/first", host(svcA), "")); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("the upgrade: %v %v", resp, err)
		}
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Time{})
		h := hhStart(t, c, br)
		res := h.collect(true)
		for _, s := range []struct {
			id         uint32
			host, path string
			extra      []hpack.HeaderField
		}{
			{3, host(svcB), "/up/second", nil},
			{5, host(svcA), "/up/third", nil},
			{7, "nowhere.example", "/up/unknown", nil},
			{9, host(svcA), "/up/hop", []hpack.HeaderField{{Name: "upgrade", Value: "h2c"}}},
		} {
			if err := h.get(s.id, s.host, s.path, s.extra...); err != nil {
				t.Fatal(err)
			}
		}
		res.waitFor(2*time.Second, func(r *hhResult) bool {
			for _, id := range []uint32{1, 3, 5, 7, 9} {
				if s := r.streams[id]; s == nil || !(s.ended || s.reset) {
					return false
				}
			}
			return true
		})
		for _, w := range []struct {
			id     uint32
			status int
			body   string
		}{{1, 200, "/up/first"}, {3, 200, "/up/second"}, {5, 200, "/up/third"}, {7, 404, ""}} {
			if s := res.snap(w.id); s.status != w.status || !s.ended || (w.body != "" && string(s.data) != w.body) {
				t.Errorf("stream %d: %s %.100q, want %d %q", w.id, res.outcome(w.id), s.data, w.status, w.body)
			}
		}
		if s := res.snap(9); !(s.reset || s.status == 400) {
			t.Errorf("stream 9 (with upgrade: h2c): %s, want refused", res.outcome(9))
		}

		targets := func(be *recBackend) []string {
			var out []string
			for _, r := range hhRequests(be, "/up/") {
				out = append(out, r.Target)
			}
			sort.Strings(out)
			return out
		}
		if a, b := targets(beA), targets(beB); strings.Join(a, " ") != "/up/first /up/third" || strings.Join(b, " ") != "/up/second" {
			t.Errorf("instance A got %q, instance B %q; want [/up/first /up/third] and [/up/second]", a, b)
		}
		if r := hhRequests(beA, "/up/first"); len(r) == 1 && len(r[0].values("X-Keep")) != 1 {
			t.Errorf("the upgraded request lost its end-to-end field: %s", r[0])
		}
		hhNoUpgradeFields(t, "A", beA)
		hhNoUpgradeFields(t, "B", beB)
		if n := len(tapA.bytes()) + len(tapB.bytes()); n > 0 {
			t.Errorf("%d bytes went through a tunnel to an instance", n)
		}
	})

	t.Run("declined upgrade", func(t *testing.T) {
		// A chunked body: the gateway declines the upgrade and serves HTTP/1.1; the
		// HTTP/2 preface after it is not HTTP/2 any more.
		rc := dialRaw(t, g.PublicAddr())
		a := rc.do(hhUpgradeHead("POST", "/up/declined", host(svcA), "Transfer-Encoding: chunked\r\n")+"5\r\nhello\r\n0\r\n\r\n", "POST", 2*time.Second)
		if !a.is(200, "/up/declined") {
			t.Fatalf("declined upgrade: %s", a)
		}
		_ = rc.send(http2.ClientPreface)
		closed, extra, after := rc.waitClose(2 * time.Second)
		t.Logf("the preface after it: closed %v after %v, answer %.60q", closed, after, extra)
		if !closed || len(extra) > 0 && !bytes.HasPrefix(extra, []byte("HTTP/1.1 ")) {
			t.Errorf("the preface after a declined upgrade got %q", extra)
		}
		hhNoUpgradeFields(t, "A", beA)
	})

	t.Run("net/http reference", func(t *testing.T) {
		tap := &hhTap{}
		ref := newRecBackend(t, hhNaive(tap))
		rc := dialRaw(t, refProxy(t, ref))
		a := rc.do(hhUpgradeHead("GET", "/up/ref", host(svcA), ""), "GET", 2*time.Second)
		got := "nothing"
		if r := ref.requests(); len(r) > 0 {
			got = fmt.Sprintf("Upgrade %q, Connection %q, HTTP2-Settings %q", r[0].values("Upgrade"), r[0].values("Connection"), r[0].values("HTTP2-Settings"))
		}
		if a.status == 101 {
			_ = rc.send(http2.ClientPreface)
			ref.waitEvent(t, "closed", 1, 3*time.Second)
		}
		t.Logf("net/http's ReverseProxy: the instance got %s; the client got %d; %d bytes then went through its tunnel to the instance (rouse: the upgrade never leaves the gateway)", got, a.status, len(tap.bytes()))
	})

	t.Run("TLS listener", func(t *testing.T) {
		const svc = "h2h-smuggle-tls"
		pki := newTestPKI(t, "*."+ns+".localhost")
		be := newRecBackend(t, hhNaive(&hhTap{}))
		tg := routeBackend(t, svc, be, pki.withTLS(false))
		rc := dialRaw(t, "tls://"+tg.PublicAddr()) // no ALPN: HTTP/1.1
		a := rc.do(hhUpgradeHead("GET", "/tls/up", host(svc), ""), "GET", 2*time.Second)
		if !a.is(200, "/tls/up") || a.header.Get("Upgrade") != "" {
			t.Errorf("Upgrade: h2c over TLS: %s %v", a, a.header)
		}
		_ = rc.send(http2.ClientPreface)
		closed, extra, after := rc.waitClose(2 * time.Second)
		t.Logf("the preface after it: closed %v after %v, answer %.60q", closed, after, extra)
		if !closed || len(extra) > 0 && !bytes.HasPrefix(extra, []byte("HTTP/1.1 ")) {
			t.Errorf("the preface on a TLS HTTP/1.1 connection got %q", extra)
		}
		if r := hhRequests(be, "/"); len(r) != 1 || r[0].Target != "/tls/up" {
			t.Errorf("the instance got %d requests, want /tls/up alone", len(r))
		}
		hhNoUpgradeFields(t, "TLS", be)
		hhOthersServed(t, tg, svc, &pki)
	})
	hhOthersServed(t, g, svcA, nil)
	hhOthersServed(t, g, svcB, nil)
}

// ---- 7. TLS mismatch ----

// Plain HTTP (HTTP/1.1 and the HTTP/2 preface) on the TLS port, and a TLS ClientHello on
// the plain port, each end within 1 s (not at ReadTimeout, 10 s): the connection closes
// or the handshake fails.
func TestH2HostileTLSMismatch(t *testing.T) {
	pki := newTestPKI(t, "*."+ns+".localhost")
	tlsBe, plainBe := newRecBackend(t, serveEach(echoTarget)), newRecBackend(t, serveEach(echoTarget))
	const tlsSvc, plainSvc = "h2h-mismatch-tls", "h2h-mismatch-plain"
	tg := routeBackend(t, tlsSvc, tlsBe, pki.withTLS(false))
	pg := routeBackend(t, plainSvc, plainBe, nil)
	rejTLS := hhCounters(t, tg, "rouse_gateway_rejected_requests_total")
	rejPlain := hhCounters(t, pg, "rouse_gateway_rejected_requests_total")

	for _, p := range []struct{ name, data string }{
		{"HTTP/1.1", "GET /plain HTTP/1.1\r\nHost: " + host(tlsSvc) + "\r\n\r\n"},
		{"HTTP/2 preface", http2.ClientPreface},
	} {
		t.Run(p.name+" to the TLS port", func(t *testing.T) {
			rc := dialRaw(t, tg.PublicAddr())
			start := time.Now()
			if err := rc.send(p.data); err != nil {
				t.Fatal(err)
			}
			closed, extra, _ := rc.waitClose(3 * time.Second)
			after := time.Since(start)
			t.Logf("closed %v after %v, having sent %q", closed, after.Round(time.Millisecond), extra)
			if !closed || after > time.Second {
				t.Errorf("plain %s on the TLS port: closed %v after %v", p.name, closed, after)
			}
		})
	}
	for _, alpn := range [][]string{{"h2", "http/1.1"}, nil} {
		t.Run(fmt.Sprintf("TLS ClientHello %q to the plain port", alpn), func(t *testing.T) {
			c := hhDialTCP(t, pg.PublicAddr())
			tc := tls.Client(c, &tls.Config{RootCAs: pki.pool, ServerName: host(plainSvc), NextProtos: alpn})
			_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
			start := time.Now()
			err := tc.Handshake()
			after := time.Since(start)
			t.Logf("handshake: %v after %v", err, after.Round(time.Millisecond))
			if err == nil || isTimeoutErr(err) || after > time.Second {
				t.Errorf("a TLS client on the plain port: %v after %v", err, after)
			}
		})
	}
	if g := hhGrew(rejTLS, hhCounters(t, tg, "rouse_gateway_rejected_requests_total")); !strings.Contains(strings.Join(g, " "), `reason="tls_handshake" +2`) {
		t.Errorf("TLS listener rejections: %v, want tls_handshake +2", g)
	}
	if g := hhGrew(rejPlain, hhCounters(t, pg, "rouse_gateway_rejected_requests_total")); !strings.Contains(strings.Join(g, " "), `reason="tls_on_plain_listener" +2`) {
		t.Errorf("plain listener rejections: %v, want tls_on_plain_listener +2", g)
	}
	if n := len(hhRequests(tlsBe, "/plain")) + len(hhRequests(plainBe, "/")); n > 0 {
		t.Errorf("%d requests reached an instance", n)
	}
	hhOthersServed(t, tg, tlsSvc, &pki)
	hhOthersServed(t, pg, plainSvc, nil)
}
