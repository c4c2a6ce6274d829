package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// Request smuggling and response desync, through a real gateway in front of a recording
// backend: a raw TCP instance each test scripts, which records every request exactly as
// the gateway sent it and answers with whatever bytes the test wants. Where net/http has an
// answer, the same bytes also go through httputil.ReverseProxy (configured like the
// gateway) in front of a second recording backend with the same script: the gateway is a
// security boundary, and net/http is the judge.

// ---- the recording backend ----

// recReq is one request as the instance received it.
type recReq struct {
	Seq                   int    // arrival order over all of the backend's connections, from 1
	Conn                  int    // the connection it came on, from 1 in accept order
	Line                  string // the request line as sent
	Method, Target, Proto string
	Lines                 []string // the header lines as sent, in order
	Body                  []byte   // with chunked framing removed
	Raw                   []byte   // every byte of the request as it arrived
	Err                   error    // framing the backend could not follow
}

// values returns the value of every header line named name (any case), in order.
func (r *recReq) values(name string) []string {
	var out []string
	for _, l := range r.Lines {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			out = append(out, strings.Trim(v, " \t"))
		}
	}
	return out
}

func (r *recReq) String() string {
	return fmt.Sprintf("#%d (connection %d) %.200q, %d body bytes, err %v", r.Seq, r.Conn, r.Raw[:len(r.Raw)-len(r.Body)], len(r.Body), r.Err)
}

// recBackend is the scripted instance.
type recBackend struct {
	ln     net.Listener
	script func(*recConn)
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu     sync.Mutex
	reqs   []*recReq
	conns  map[*recConn]struct{}
	nconns int
	events map[string]int
}

// recConn is one connection from the gateway to the backend.
type recConn struct {
	b   *recBackend
	c   net.Conn
	br  *bufio.Reader
	id  int
	wmu sync.Mutex
}

// newRecBackend starts a backend on a loopback port; script serves each connection (the
// connection is closed when it returns). Everything it started ends with the test.
func newRecBackend(t testing.TB, script func(*recConn)) *recBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &recBackend{ln: ln, script: script, done: make(chan struct{}), conns: map[*recConn]struct{}{}, events: map[string]int{}}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(func() {
		b.stop()
		b.wg.Wait()
		// The testing package keeps finished tests (and their cleanups) reachable: drop
		// the records, which the poisoning loop makes a hundred MiB of.
		b.mu.Lock()
		b.reqs = nil
		b.mu.Unlock()
	})
	return b
}

func (b *recBackend) addr() string { return b.ln.Addr().String() }
func (b *recBackend) port() int    { return b.ln.Addr().(*net.TCPAddr).Port }

func (b *recBackend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		select {
		case <-b.done:
			b.mu.Unlock()
			c.Close()
			continue
		default:
		}
		b.nconns++
		rc := &recConn{b: b, c: c, br: bufio.NewReader(c), id: b.nconns}
		b.conns[rc] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.wg.Done()
			b.script(rc)
			rc.c.Close()
			b.mu.Lock()
			delete(b.conns, rc)
			b.mu.Unlock()
			b.note("closed")
		}()
	}
}

// stop closes the listener and every connection; scripts and timers then end.
func (b *recBackend) stop() {
	b.once.Do(func() {
		close(b.done)
		b.ln.Close()
	})
	b.mu.Lock()
	for rc := range b.conns {
		rc.c.Close()
	}
	b.mu.Unlock()
}

// later runs f after d, unless the backend stops first.
func (b *recBackend) later(d time.Duration, f func()) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			f()
		case <-b.done:
		}
	}()
}

func (b *recBackend) note(event string) {
	b.mu.Lock()
	b.events[event]++
	b.mu.Unlock()
}

func (b *recBackend) event(name string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.events[name]
}

func (b *recBackend) requests() []*recReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.reqs)
}

// find returns the requests whose target contains s.
func (b *recBackend) find(s string) []*recReq {
	var out []*recReq
	for _, r := range b.requests() {
		if strings.Contains(r.Target, s) {
			out = append(out, r)
		}
	}
	return out
}

// waitEvent waits until the backend counted the event at least n times.
func (b *recBackend) waitEvent(t *testing.T, name string, n int, within time.Duration) {
	t.Helper()
	poll.Until(t, within, "the backend event", func() error {
		if got := b.event(name); got < n {
			return fmt.Errorf("backend event %q: %d, want %d", name, got, n)
		}
		return nil
	})
}

func (c *recConn) write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(c.c, s)
	return err
}

// next reads one request and records it. It returns a nil request (and the error) when the
// connection ended or timed out before a byte of one; a request whose framing it could not
// follow is recorded with Err set, and returned with that error.
func (c *recConn) next() (*recReq, error) {
	r := &recReq{Conn: c.id}
	fail := func(err error) (*recReq, error) {
		if len(r.Raw) == 0 {
			return nil, err
		}
		r.Err = err
		c.record(r)
		return r, err
	}
	readLine := func() (string, error) {
		s, err := c.br.ReadString('\n')
		r.Raw = append(r.Raw, s...)
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r"), nil
	}
	line, err := readLine()
	if err != nil {
		return fail(err)
	}
	r.Line = line
	parts := strings.SplitN(line, " ", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	r.Method, r.Target, r.Proto = parts[0], parts[1], parts[2]
	for {
		l, err := readLine()
		if err != nil {
			return fail(err)
		}
		if l == "" {
			break
		}
		r.Lines = append(r.Lines, l)
	}
	readN := func(n int64) error {
		buf := make([]byte, n)
		m, err := io.ReadFull(c.br, buf)
		r.Raw = append(r.Raw, buf[:m]...)
		r.Body = append(r.Body, buf[:m]...)
		return err
	}
	switch te, cl := r.values("Transfer-Encoding"), r.values("Content-Length"); {
	case len(te) > 0:
		codings := strings.Split(strings.Join(te, ","), ",")
		if !strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") {
			return fail(fmt.Errorf("transfer-encoding %q", te))
		}
		for {
			l, err := readLine()
			if err != nil {
				return fail(err)
			}
			size, _, _ := strings.Cut(l, ";")
			n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
			if err != nil || n < 0 || n > 1<<24 {
				return fail(fmt.Errorf("chunk size line %q", l))
			}
			if n == 0 {
				for { // trailer section
					l, err := readLine()
					if err != nil {
						return fail(err)
					}
					if l == "" {
						break
					}
				}
				break
			}
			if err := readN(n); err != nil {
				return fail(err)
			}
			if l, err := readLine(); err != nil || l != "" {
				return fail(fmt.Errorf("chunk data not followed by CRLF: %q %v", l, err))
			}
		}
	case len(cl) > 0:
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || n > 1<<24 || slices.ContainsFunc(cl, func(v string) bool { return v != cl[0] }) {
			return fail(fmt.Errorf("content-length %q", cl))
		}
		if err := readN(n); err != nil {
			return fail(err)
		}
	}
	c.record(r)
	return r, nil
}

func (c *recConn) record(r *recReq) {
	c.b.mu.Lock()
	r.Seq = len(c.b.reqs) + 1
	c.b.reqs = append(c.b.reqs, r)
	c.b.mu.Unlock()
}

// serveEach is a script that answers each request with respond until it returns false or
// the connection ends; a request with broken framing ends the connection.
func serveEach(respond func(c *recConn, r *recReq) bool) func(*recConn) {
	return func(c *recConn) {
		for {
			r, err := c.next()
			if err != nil || !respond(c, r) {
				return
			}
		}
	}
}

// okResponse is a well-framed 200 with body.
func okResponse(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// echoTarget answers every request with its own target: each client can tell its answer.
func echoTarget(c *recConn, r *recReq) bool { return c.write(okResponse(r.Target)) == nil }

// routeBackend serves service svc from be alone — revision svc-00001, registered in Consul
// with a passing TTL check (the gateway's endpoint watcher reads health checks, so a
// service without one is not seen), no Nomad job — starts a gateway (mod may be nil) and
// waits until it routes to be.
func routeBackend(t testing.TB, svc string, be *recBackend, mod func(*gateway.Config)) *gateway.Gateway {
	t.Helper()
	rev := svc + "-00001"
	cfg := revmeta.Defaults(ns, svc, rev)
	cfg.Timeout = 10 * time.Second // a desynced exchange must not hang the test for minutes
	registerRevision(t, cfg, be.port())
	setRoute(t, svc, store.RouteTarget{Revision: rev, Percent: 100})
	g := startGateway(t, mod)
	t.Cleanup(be.stop) // runs before the gateway stops: nothing it waits on stays open
	waitReady(t, g, rev, 1)
	return g
}

// registerRevision writes the revision's config to KV and registers an instance of it
// on each loopback port, in Consul with a passing TTL check (the gateway's endpoint
// watcher reads health checks, so a service without one is not seen) and no Nomad job.
// The config, the instances and the service record go when the test ends.
func registerRevision(t testing.TB, cfg revmeta.Config, ports ...int) {
	t.Helper()
	st := store.New(cluster.Consul)
	ctx := context.Background()
	if err := st.PutRevision(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	agent := cluster.Consul.Agent()
	for i, port := range ports {
		id := fmt.Sprintf("test-%s-%s-%d", cfg.Namespace, cfg.Revision, i)
		err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: cfg.Revision, Address: "127.0.0.1", Port: port,
			Tags:  []string{revmeta.TagRouse, revmeta.TagServicePrefix + cfg.Service},
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = agent.ServiceDeregister(id) })
	}
	t.Cleanup(func() {
		_ = st.DeleteService(ctx, cfg.Namespace, cfg.Service)
		_ = st.DeleteRevision(ctx, cfg.Namespace, cfg.Revision)
	})
}

// refProxy runs Go's httputil.ReverseProxy in front of be, set up as the gateway is by
// default (Host kept, X-Forwarded-For appended to, X-Forwarded-Host and -Proto set), and
// returns its address.
func refProxy(t *testing.T, be *recBackend) string {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: be.addr()}
	tr := &http.Transport{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.Out.Header["X-Forwarded-For"] = r.In.Header["X-Forwarded-For"]
			r.SetXForwarded()
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	prev := log.Writer()
	log.SetOutput(io.Discard) // http.Transport logs each unsolicited response there
	t.Cleanup(func() { log.SetOutput(prev) })
	srv := httptest.NewUnstartedServer(rp)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		be.stop()
		srv.Close()
		tr.CloseIdleConnections()
	})
	return srv.Listener.Addr().String()
}

// proxySide is one proxy under test and the backend behind it.
type proxySide struct {
	who  string
	addr string
	be   *recBackend
}

// bothSides starts the gateway for svc in front of one backend running script and the
// reference proxy in front of another.
func bothSides(t *testing.T, svc string, script func(*recConn), mod func(*gateway.Config)) []proxySide {
	t.Helper()
	be := newRecBackend(t, script)
	g := routeBackend(t, svc, be, mod)
	ref := newRecBackend(t, script)
	return []proxySide{{"rouse", g.PublicAddr(), be}, {"net/http reference", refProxy(t, ref), ref}}
}

// ---- the client ----

// rawClient is one client connection speaking raw bytes; it keeps every byte it read.
type rawClient struct {
	c   net.Conn
	br  *bufio.Reader
	got *bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	rc, err := dialRawErr(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.c.Close() })
	return rc
}

// dialRawErr is dialRaw for goroutines other than the test's: the caller closes it. An
// address "tls://host:port" is a gateway's TLS listener (see tls_test.go); the client
// trusts any certificate there.
func dialRawErr(addr string) (*rawClient, error) {
	var c net.Conn
	var err error
	if a, ok := strings.CutPrefix(addr, "tls://"); ok {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err = tls.DialWithDialer(d, "tcp", a, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		return nil, err
	}
	got := &bytes.Buffer{}
	return &rawClient{c: c, br: bufio.NewReader(io.TeeReader(c, got)), got: got}, nil
}

func (rc *rawClient) send(s string) error {
	_ = rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(rc.c, s)
	return err
}

// rawAnswer is one response as the client parsed it.
type rawAnswer struct {
	status int
	header http.Header
	body   string
	err    error
}

func (a rawAnswer) String() string {
	if a.err != nil && a.status == 0 {
		return "error: " + a.err.Error()
	}
	s := fmt.Sprintf("%d %.120q", a.status, a.body)
	if a.err != nil {
		s += " (body: " + a.err.Error() + ")"
	}
	return s
}

func (a rawAnswer) is(status int, body string) bool {
	return a.err == nil && a.status == status && a.body == body
}

// read reads one response to a request of method, body included, within d.
func (rc *rawClient) read(method string, d time.Duration) rawAnswer {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		return rawAnswer{err: err}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return rawAnswer{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// do sends req and reads its response.
func (rc *rawClient) do(req, method string, d time.Duration) rawAnswer {
	if err := rc.send(req); err != nil {
		return rawAnswer{err: err}
	}
	return rc.read(method, d)
}

// waitClose reads until the peer closes the connection or d passes; it returns whether it
// closed, what was read meanwhile and when it ended.
func (rc *rawClient) waitClose(d time.Duration) (closed bool, extra []byte, after time.Duration) {
	start := time.Now()
	_ = rc.c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 4096)
	for {
		n, err := rc.br.Read(buf)
		extra = append(extra, buf[:n]...)
		if err != nil {
			return !isTimeoutErr(err), extra, time.Since(start)
		}
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// oneShot sends req on a fresh connection and reads the answer.
func oneShot(addr, req, method string) rawAnswer {
	rc, err := dialRawErr(addr)
	if err != nil {
		return rawAnswer{err: err}
	}
	defer rc.c.Close()
	return rc.do(req, method, 5*time.Second)
}

// forceGeneral, added to a request head, names a header in Connection (the rules drop it
// too). Before the gateway had one HTTP/1.1 server, such a request went to its second
// (fasthttp) path; the cases still run once plain and once with it, and the "named"
// variant of the idle-POST case streams its body instead of sending it from memory.
const forceGeneral = "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"

var desyncEngines = []struct{ name, extra string }{{"plain", ""}, {"named", forceGeneral}}

// ---- 1. pipelined bodies crossing the read buffer ----

// Twenty pipelined POSTs with 7000-byte bodies in one write: each request's head and body
// reach the instance together, once, in order, and each client answer is its own. In the
// crafted variant two bodies hold what looks like heads — request 05's body a whole
// request (GET /smuggled, chunked, a forged X-Forwarded-For), request 09's a copy of
// request 05's head with its lines swapped for a forged X-Forwarded-For and
// Content-Length: 0000 — placed where a 40 KiB read buffer (MaxHeaderBytes + 8 KiB)
// ends inside request 05's body, and where a head parsed before the buffer moved would be
// read after; whatever the buffer, they are plain pipelined requests, and the instance
// must never see a request the client did not send.
func TestDesyncPipelinedBodies(t *testing.T) {
	const n = 20
	script := serveEach(func(c *recConn, r *recReq) bool {
		return c.write(okResponse(r.Target+" "+bodyID.FindString(string(r.Body)))) == nil
	})
	for _, crafted := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "crafted"}[crafted]
		t.Run(name, func(t *testing.T) {
			svc := "desync-pipe-" + name
			h := host(svc)
			head := func(i, size int) string {
				return fmt.Sprintf("POST /pipe/%02d HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", i, h, size)
			}
			bodies := make([]string, n)
			for i := range bodies {
				bodies[i] = padX(fmt.Sprintf("body-%02d|", i), 7000)
			}
			if crafted {
				// Request 05's body is a whole chunked request, forged X-Forwarded-For included.
				smuggled := "GET /smuggled HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
				size := 7000 - len(smuggled) - len("1b58\r\n") - len("\r\n0\r\n\r\n") // four hex digits
				bodies[5] = smuggled + strconv.FormatInt(int64(size), 16) + "\r\n" + padX("body-05|", size) + "\r\n0\r\n\r\n"
				if len(bodies[5]) != 7000 {
					t.Fatalf("request 05's body is %d bytes", len(bodies[5]))
				}
				// Request 09's body holds, at offset 7000, request 05's head with every line
				// the same length: another request line, X-Forwarded-For for Content-Type,
				// Content-Length 0000.
				forged := "POST /smuggle HTTP/1.1\r\nHost: " + h + "\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 0000\r\n\r\n"
				if len(forged) != len(head(5, len(bodies[5]))) {
					t.Fatalf("forged head of %d bytes, request 05's is %d", len(forged), len(head(5, len(bodies[5]))))
				}
				bodies[9] = padX(padX("body-09|", 7000)+forged, 7200)
			}
			var all strings.Builder
			for i, b := range bodies {
				all.WriteString(head(i, len(b)) + b)
			}
			for _, s := range bothSides(t, svc, script, nil) {
				checkPipeline(t, s, all.String(), bodies)
			}
		})
	}
}

// bodyID finds which request a body belongs to.
var bodyID = regexp.MustCompile(`body-[0-9]{2}`)

// padX fills s with 'x' to n bytes.
func padX(s string, n int) string {
	return s + strings.Repeat("x", max(0, n-len(s)))
}

func checkPipeline(t *testing.T, s proxySide, all string, bodies []string) {
	t.Helper()
	rc := dialRaw(t, s.addr)
	wrote := make(chan error, 1)
	go func() { wrote <- rc.send(all) }() // one write of all of them
	got := 0
	for i := range bodies {
		a := rc.read("POST", 15*time.Second)
		if want := fmt.Sprintf("/pipe/%02d body-%02d", i, i); !a.is(200, want) {
			t.Errorf("%s: response %d: %s, want 200 %q", s.who, i, a, want)
			break
		}
		got++
	}
	if got < len(bodies) {
		rc.c.Close()
	}
	if err := <-wrote; err != nil && got == len(bodies) {
		t.Errorf("%s: writing the pipelined requests: %v", s.who, err)
	}
	reqs := s.be.requests()
	if len(reqs) != len(bodies) {
		t.Errorf("%s: the instance received %d requests, want %d", s.who, len(reqs), len(bodies))
	}
	bad := 0
	for i, r := range reqs {
		var why []string
		if want := fmt.Sprintf("/pipe/%02d", i); r.Method != "POST" || r.Target != want || r.Proto != "HTTP/1.1" {
			why = append(why, fmt.Sprintf("request line %q, want POST %s HTTP/1.1", r.Line, want))
		}
		if r.Err != nil {
			why = append(why, "framing: "+r.Err.Error())
		}
		if i < len(bodies) && string(r.Body) != bodies[i] {
			why = append(why, fmt.Sprintf("body of %d bytes starting %.16q, want request %d's", len(r.Body), r.Body, i))
		}
		if v := r.values("X-Forwarded-For"); !slices.Equal(v, []string{"127.0.0.1"}) {
			why = append(why, fmt.Sprintf("X-Forwarded-For lines %q", v))
		}
		if v := r.values("Transfer-Encoding"); len(v) > 0 {
			why = append(why, fmt.Sprintf("Transfer-Encoding lines %q", v))
		}
		if v := r.values("Content-Length"); i < len(bodies) && !slices.Equal(v, []string{strconv.Itoa(len(bodies[i]))}) {
			why = append(why, fmt.Sprintf("Content-Length lines %q", v))
		}
		if len(why) > 0 {
			if bad++; bad <= 3 {
				t.Errorf("%s: the instance's request %d is not the client's request %d: %s\n%s", s.who, i, i, strings.Join(why, "; "), r)
			}
		}
	}
	if bad > 3 {
		t.Errorf("%s: ... %d requests in all were not the client's", s.who, bad)
	}
	var forged []string
	for _, r := range reqs {
		if !strings.HasPrefix(r.Target, "/pipe/") || slices.ContainsFunc(r.values("X-Forwarded-For"), func(v string) bool { return strings.Contains(v, "6.6.6.6") }) {
			forged = append(forged, r.String())
		}
	}
	if len(forged) > 0 {
		t.Errorf("%s: the instance received requests the client never sent:\n%s", s.who, strings.Join(forged, "\n"))
	}
}

// ---- 2. response-queue poisoning on kept-alive upstream connections ----

// quietGate lets the backend write unsolicited bytes only while no client request is in
// flight, so they always land on an idle upstream connection. (Bytes that race a request on
// the wire cannot be told apart from its response — by any proxy — so the test never sends
// them then.)
type quietGate struct {
	mu       sync.Mutex // one unsolicited write at a time
	on       atomic.Bool
	inFlight atomic.Int32
}

func (q *quietGate) enter() {
	for {
		for q.on.Load() {
			time.Sleep(100 * time.Microsecond)
		}
		q.inFlight.Add(1)
		if !q.on.Load() {
			return
		}
		q.inFlight.Add(-1)
	}
}

func (q *quietGate) exit() { q.inFlight.Add(-1) }

// hold runs f while no request is in flight, and keeps requests out for a moment after,
// so the bytes f wrote have reached the gateway before anything is sent again.
func (q *quietGate) hold(f func()) {
	if q == nil {
		f()
		time.Sleep(5 * time.Millisecond)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.on.Store(true)
	defer q.on.Store(false)
	for deadline := time.Now().Add(5 * time.Second); q.inFlight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
	f()
	time.Sleep(5 * time.Millisecond)
}

// poisonScript: /a/same a 204 with Content-Length 5 and 5 bytes in the same write; /a/late
// the same with the 5 bytes 50 ms later; /b (HEAD) Content-Length 13 and 13 body bytes
// 50 ms after the head; /c a complete response, then 100 ms later a whole second response,
// POISON-ATTACK. Anything else: its own target. Event "extra": unsolicited bytes written
// (and given 5 ms to reach the gateway).
func poisonScript(q *quietGate) func(*recConn) {
	return serveEach(func(c *recConn, r *recReq) bool {
		unsolicited := func(d time.Duration, s string) {
			c.b.later(d, func() {
				q.hold(func() { _ = c.write(s) })
				c.b.note("extra")
			})
		}
		switch r.Target {
		case "/a/same":
			err := c.write("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
			q.hold(func() {})
			c.b.note("extra")
			return err == nil
		case "/a/late":
			unsolicited(50*time.Millisecond, "hello")
			return c.write("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n") == nil
		case "/b":
			unsolicited(50*time.Millisecond, "poisoned-body")
			return c.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n") == nil
		case "/c":
			unsolicited(100*time.Millisecond, okResponse("POISON-ATTACK"))
			return c.write(okResponse("trigger")) == nil
		}
		return echoTarget(c, r)
	})
}

// After an instance's response carries bytes past its end — a 204's or a HEAD's body, a
// whole extra response — requests from other clients still get their own answers, never
// POISON-ATTACK nor another request's.
func TestDesyncResponseQueuePoisoning(t *testing.T) {
	cases := []struct {
		name, method, path string
		status             int
		body               string
	}{
		{"204 with a body", "GET", "/a/same", 204, ""},
		{"204 with a late body", "GET", "/a/late", 204, ""},
		{"HEAD with a late body", "HEAD", "/b", 200, ""},
		{"late extra response", "GET", "/c", 200, "trigger"},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc := fmt.Sprintf("desync-poison-%d", ci)
			h := host(svc)
			for _, s := range bothSides(t, svc, poisonScript(nil), nil) {
				for round := range 2 {
					extra := s.be.event("extra")
					a := oneShot(s.addr, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: "+h+"\r\n\r\n", tc.method)
					if !a.is(tc.status, tc.body) {
						t.Errorf("%s: %s %s: %s, want %d %q", s.who, tc.method, tc.path, a, tc.status, tc.body)
					}
					s.be.waitEvent(t, "extra", extra+1, 5*time.Second)
					for k := range 4 {
						path := fmt.Sprintf("/id/%d-%d", round, k)
						if a := oneShot(s.addr, "GET "+path+" HTTP/1.1\r\nHost: "+h+"\r\n\r\n", "GET"); !a.is(200, path) {
							t.Errorf("%s: round %d: another client's GET %s after the instance's extra bytes got %s, want its own 200 %q", s.who, round, path, a, path)
						}
					}
				}
			}
		})
	}
	t.Run("attacker and innocent", func(t *testing.T) {
		q := &quietGate{}
		svc := "desync-poison-race"
		h := host(svc)
		for _, s := range bothSides(t, svc, poisonScript(q), nil) {
			triggers, served, mixups, failed, examples := poisonRace(s.addr, h, q, 3*time.Second)
			poisons := s.be.event("extra")
			t.Logf("%s: %d triggers, %d unsolicited responses written, %d innocent requests", s.who, triggers, poisons, served)
			if mixups > 0 || failed > 0 {
				t.Errorf("%s: of %d innocent requests, %d got another response's body and %d failed, e.g.\n%s", s.who, served, mixups, failed, strings.Join(examples, "\n"))
			}
			if served < 50 || poisons < 5 {
				t.Errorf("%s: the race barely ran: %d innocent requests, %d unsolicited responses", s.who, served, poisons)
			}
		}
	})
}

// poisonRace runs an attacker (GET /c every 25 ms on one kept-alive connection) and an
// innocent client (GET /id/inn-N back to back on another) for d.
func poisonRace(addr, h string, q *quietGate, d time.Duration) (triggers, served, mixups, failed int, examples []string) {
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var rc *rawClient
		defer func() {
			if rc != nil {
				rc.c.Close()
			}
		}()
		for time.Now().Before(stop) {
			if rc == nil {
				var err error
				if rc, err = dialRawErr(addr); err != nil {
					return
				}
			}
			q.enter()
			a := rc.do("GET /c HTTP/1.1\r\nHost: "+h+"\r\n\r\n", "GET", 5*time.Second)
			q.exit()
			triggers++
			if a.err != nil {
				rc.c.Close()
				rc = nil
			}
			time.Sleep(25 * time.Millisecond) // the attack's pace
		}
	}()
	var rc *rawClient
	for i := 0; time.Now().Before(stop); i++ {
		if rc == nil {
			var err error
			if rc, err = dialRawErr(addr); err != nil {
				failed++
				examples = append(examples, "dial: "+err.Error())
				break
			}
		}
		path := fmt.Sprintf("/id/inn-%d", i)
		q.enter()
		a := rc.do("GET "+path+" HTTP/1.1\r\nHost: "+h+"\r\n\r\n", "GET", 5*time.Second)
		q.exit()
		served++
		switch {
		case a.is(200, path):
			continue
		case a.err == nil && a.status == 200:
			mixups++
		default:
			failed++
		}
		if len(examples) < 5 {
			examples = append(examples, fmt.Sprintf("GET %s: %s", path, a))
		}
		if a.err != nil {
			rc.c.Close()
			rc = nil
		}
	}
	if rc != nil {
		rc.c.Close()
	}
	wg.Wait()
	return triggers, served, mixups, failed, examples
}

// ---- 3. upgrades ----

// upgradeScript: /upgrade answers 200 (the instance refuses the upgrade) and keeps serving
// HTTP/1.1; /echo with an Upgrade header switches protocols and echoes until the gateway
// closes (event "echo-closed"); anything else gets its own target.
var upgradeScript = serveEach(func(c *recConn, r *recReq) bool {
	switch {
	case r.Target == "/echo" && len(r.values("Upgrade")) > 0:
		if c.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n") != nil {
			return false
		}
		_, _ = io.Copy(c.c, c.br)
		c.b.note("echo-closed")
		return false
	case r.Target == "/upgrade":
		return c.write(okResponse("refused")) == nil
	}
	return echoTarget(c, r)
})

// An upgrade the instance refuses (200, not 101) leaves an HTTP/1.1 connection: what the
// client sends next is either proxied as a request (X-Forwarded-For appended) or not
// forwarded at all (the gateway closed) — never relayed as raw bytes. An upgrade the
// instance accepts is closed once idle longer than IdleTimeout.
func TestDesyncRefusedUpgrade(t *testing.T) {
	// h2c with the gateway's upgrade off (NoH2CUpgrade): declined like net/http does. With
	// it on, the gateway terminates the upgrade itself (TestH2CUpgrade).
	for _, tc := range []struct{ name, headers string }{
		{"foo", "Connection: upgrade\r\nUpgrade: foo\r\n"},
		{"h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := "desync-upgrade-" + tc.name
			h := host(svc)
			for _, s := range bothSides(t, svc, upgradeScript, func(c *gateway.Config) { c.NoH2CUpgrade = true }) {
				rc := dialRaw(t, s.addr)
				if a := rc.do("GET /upgrade HTTP/1.1\r\nHost: "+h+"\r\n"+tc.headers+"\r\n", "GET", 5*time.Second); !a.is(200, "refused") {
					t.Errorf("%s: the refused upgrade: %s, want the instance's 200 %q", s.who, a, "refused")
					continue
				}
				werr := rc.send("GET /second HTTP/1.1\r\nHost: " + h + "\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
				a := rc.read("GET", 3*time.Second)
				closed := werr != nil || (a.err != nil && !isTimeoutErr(a.err))
				seen := s.be.find("/second")
				switch {
				case closed:
				case a.err != nil:
					t.Errorf("%s: after the refused upgrade the gateway neither answered the next request nor closed: %v", s.who, a.err)
				case !a.is(200, "/second"):
					t.Errorf("%s: the request after the refused upgrade got %s, want the instance's 200 %q", s.who, a, "/second")
				case len(seen) != 1:
					t.Errorf("%s: the instance received /second %d times, want once", s.who, len(seen))
				}
				for _, r := range seen {
					if xff := r.values("X-Forwarded-For"); !slices.Equal(xff, []string{"6.6.6.6, 127.0.0.1"}) {
						t.Errorf("%s: /second reached the instance as the client wrote it, not proxied: X-Forwarded-For lines %q, want [\"6.6.6.6, 127.0.0.1\"]\n%s", s.who, xff, r)
					}
				}
			}
		})
	}
	t.Run("accepted upgrade idles out", func(t *testing.T) {
		svc := "desync-upgrade-idle"
		be := newRecBackend(t, upgradeScript)
		g := routeBackend(t, svc, be, func(c *gateway.Config) { c.IdleTimeout = time.Second })
		rc := dialRaw(t, g.PublicAddr())
		if a := rc.do("GET /echo HTTP/1.1\r\nHost: "+host(svc)+"\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", "GET", 5*time.Second); a.err != nil || a.status != 101 {
			t.Fatalf("upgrade: %s, want 101", a)
		}
		// Busy for twice IdleTimeout: the gateway times idleness, not the connection's age.
		for i := range 8 {
			msg := fmt.Sprintf("ping %d\n", i)
			if err := rc.send(msg); err != nil {
				t.Fatalf("ping %d: %v", i, err)
			}
			_ = rc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if got, err := rc.br.ReadString('\n'); got != msg || err != nil {
				t.Fatalf("ping %d echoed %q, %v", i, got, err)
			}
			time.Sleep(250 * time.Millisecond) // the client's pace
		}
		closed, extra, after := rc.waitClose(5 * time.Second)
		if !closed || after > 3*time.Second {
			t.Fatalf("an upgraded connection idle for %s with IdleTimeout 1s: closed=%v (read %q), want closed within 3s", after.Round(time.Millisecond), closed, extra)
		}
		t.Logf("closed after %s idle", after.Round(time.Millisecond))
		be.waitEvent(t, "echo-closed", 1, 3*time.Second)
	})
}

// ---- 4. duplicate X-Forwarded-* lines ----

// A client's repeated X-Forwarded-For lines become one line with the client address last
// (as httputil.ReverseProxy does); X-Forwarded-Host and -Proto are the gateway's own, one
// line each, whatever the client sent.
func TestDesyncDuplicateForwardedHeaders(t *testing.T) {
	const svc = "desync-xff"
	h := host(svc)
	cases := []struct{ name, lines string }{
		{"two X-Forwarded-For", "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"},
		{"two of each", "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Host: evil1.example\r\nX-Forwarded-Proto: https\r\n" +
			"X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Host: evil2.example\r\nX-Forwarded-Proto: ftp\r\n"},
		{"names in other cases", "x-forwarded-for: 1.1.1.1\r\nX-FORWARDED-FOR: 2.2.2.2\r\nx-forwarded-host: evil.example\r\nX-Forwarded-Host: evil2.example\r\nx-forwarded-proto: https\r\n"},
	}
	for _, s := range bothSides(t, svc, serveEach(echoTarget), nil) {
		for i, tc := range cases {
			path := fmt.Sprintf("/xff/%d", i)
			if a := oneShot(s.addr, "GET "+path+" HTTP/1.1\r\nHost: "+h+"\r\n"+tc.lines+"\r\n", "GET"); !a.is(200, path) {
				t.Errorf("%s: %s: %s, want 200", s.who, tc.name, a)
				continue
			}
			seen := s.be.find(path)
			if len(seen) != 1 {
				t.Errorf("%s: %s: the instance received the request %d times", s.who, tc.name, len(seen))
				continue
			}
			r := seen[0]
			for _, want := range []struct {
				name string
				vals []string
			}{
				{"X-Forwarded-For", []string{"1.1.1.1, 2.2.2.2, 127.0.0.1"}},
				{"X-Forwarded-Host", []string{h}},
				{"X-Forwarded-Proto", []string{"http"}},
			} {
				if got := r.values(want.name); !slices.Equal(got, want.vals) {
					t.Errorf("%s: %s: the instance got %s lines %q, want %q\n%s", s.who, tc.name, want.name, got, want.vals, r)
				}
			}
		}
	}
}

// ---- 5. absolute-form request targets ----

// An absolute-form target routes by its host, which replaces the Host header (RFC 9112
// §3.2.2), and goes on in origin form; a Host with userinfo is refused.
func TestDesyncAbsoluteFormTarget(t *testing.T) {
	const svc = "desync-absolute"
	h := host(svc)
	for _, s := range bothSides(t, svc, serveEach(echoTarget), nil) {
		if a := oneShot(s.addr, "GET http://"+h+"/x HTTP/1.1\r\nHost: evil.example\r\n\r\n", "GET"); !a.is(200, "/x") {
			t.Errorf("%s: GET http://%s/x with Host: evil.example: %s, want the instance's 200 \"/x\"", s.who, h, a)
		}
		reqs := s.be.requests()
		if len(reqs) != 1 {
			t.Errorf("%s: the instance received %d requests, want 1: %v", s.who, len(reqs), reqs)
		}
		for _, r := range reqs {
			if r.Target != "/x" || !slices.Equal(r.values("Host"), []string{h}) || !slices.Equal(r.values("X-Forwarded-Host"), []string{h}) {
				t.Errorf("%s: the instance got target %q, Host %q, X-Forwarded-Host %q; want \"/x\" and %q\n%s",
					s.who, r.Target, r.values("Host"), r.values("X-Forwarded-Host"), h, r)
			}
		}
		if a := oneShot(s.addr, "GET /y HTTP/1.1\r\nHost: a@"+h+"\r\n\r\n", "GET"); a.err != nil || a.status != 400 {
			t.Errorf("%s: Host: a@%s: %s, want 400", s.who, h, a)
		}
		if seen := s.be.find("/y"); len(seen) > 0 {
			t.Errorf("%s: Host: a@%s reached the instance: %v", s.who, h, seen)
		}
	}
}

// ---- 6. a POST after the instance closed an idle kept-alive connection ----

// The instance closes each connection 1 s after its last response. A POST two seconds
// after a GET must not go to that dead connection (it cannot be retried): it gets 200, and
// the instance receives it exactly once.
func TestDesyncPostAfterInstanceClosedIdle(t *testing.T) {
	script := func(c *recConn) {
		for {
			_ = c.c.SetReadDeadline(time.Now().Add(time.Second))
			r, err := c.next()
			if err != nil {
				if r == nil && isTimeoutErr(err) {
					c.b.note("idle-close")
				}
				return
			}
			if c.write(okResponse(fmt.Sprintf("%s %d", r.Target, len(r.Body)))) != nil {
				return
			}
		}
	}
	for _, e := range desyncEngines {
		t.Run(e.name, func(t *testing.T) {
			svc := "desync-idlepost-" + e.name
			h := host(svc)
			body := "hello"
			if e.name == "named" {
				body = strings.Repeat("p", 20000) // streamed, not from memory
			}
			for _, s := range bothSides(t, svc, script, nil) {
				rc := dialRaw(t, s.addr)
				if a := rc.do("GET /first HTTP/1.1\r\nHost: "+h+"\r\n"+e.extra+"\r\n", "GET", 5*time.Second); !a.is(200, "/first 0") {
					t.Errorf("%s: GET: %s", s.who, a)
					continue
				}
				sent := time.Now()
				s.be.waitEvent(t, "idle-close", 1, 5*time.Second)
				time.Sleep(time.Until(sent.Add(2 * time.Second))) // the scenario: the client pauses 2 s
				want := fmt.Sprintf("/post %d", len(body))
				req := fmt.Sprintf("POST /post HTTP/1.1\r\nHost: %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", h, e.extra, len(body), body)
				if a := rc.do(req, "POST", 5*time.Second); !a.is(200, want) {
					t.Errorf("%s: POST after the instance closed the idle connection: %s, want 200 %q", s.who, a, want)
				}
				if seen := s.be.find("/post"); len(seen) != 1 || string(seen[0].Body) != body {
					t.Errorf("%s: the instance received the POST %d times, want once with its body: %v", s.who, len(seen), seen)
				}
			}
		})
	}
}

// ---- 7. Connection naming a framing header in the instance's response ----

// Connection: Content-Length (or Transfer-Encoding, with a chunked body) in a response
// must not unframe it: the client gets the body, and its next request on the same
// connection its own answer.
func TestDesyncConnectionNamesFraming(t *testing.T) {
	script := serveEach(func(c *recConn, r *recReq) bool {
		switch r.Target {
		case "/conn-cl":
			return c.write("HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nfirst") == nil
		case "/conn-te":
			return c.write("HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n") == nil
		}
		return echoTarget(c, r)
	})
	for _, e := range desyncEngines {
		t.Run(e.name, func(t *testing.T) {
			svc := "desync-connframing-" + e.name
			h := host(svc)
			for _, s := range bothSides(t, svc, script, nil) {
				for _, path := range []string{"/conn-cl", "/conn-te"} {
					rc := dialRaw(t, s.addr)
					if a := rc.do("GET "+path+" HTTP/1.1\r\nHost: "+h+"\r\n"+e.extra+"\r\n", "GET", 3*time.Second); !a.is(200, "first") {
						t.Errorf("%s: GET %s: %s, want 200 \"first\"; the client read:\n%q", s.who, path, a, rc.got)
						continue
					}
					next := "/id/after" + path
					if a := rc.do("GET "+next+" HTTP/1.1\r\nHost: "+h+"\r\n\r\n", "GET", 3*time.Second); !a.is(200, next) {
						t.Errorf("%s: the request after GET %s on the same connection: %s, want 200 %q; the client read:\n%q", s.who, path, a, next, rc.got)
					}
				}
			}
		})
	}
}

// ---- 8. invalid bytes in the instance's response header values ----

// A bare LF, a bare CR or a NUL inside a response header value: the client gets the
// gateway's 502, never those bytes. net/http answers 502 to the CR and the NUL too; a bare
// LF its client takes for a line end (RFC 9112 §2.2 lets a recipient), so its proxy passes
// on two headers — a gateway that relays head bytes as they came must refuse it instead.
func TestDesyncInvalidResponseHeaderBytes(t *testing.T) {
	bad := map[string]string{"/lf": "a\nInjected: yes", "/cr": "a\rInjected: yes", "/nul": "a\x00Injected: yes"}
	script := serveEach(func(c *recConn, r *recReq) bool {
		if v, ok := bad[r.Target]; ok {
			return c.write("HTTP/1.1 200 OK\r\nX-Bad: "+v+"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok") == nil
		}
		return echoTarget(c, r)
	})
	for _, e := range desyncEngines {
		t.Run(e.name, func(t *testing.T) {
			svc := "desync-badresp-" + e.name
			for _, s := range bothSides(t, svc, script, nil) {
				for _, path := range []string{"/lf", "/cr", "/nul"} {
					if path == "/lf" && s.who != "rouse" {
						continue // see above
					}
					rc := dialRaw(t, s.addr)
					a := rc.do("GET "+path+" HTTP/1.1\r\nHost: "+host(svc)+"\r\n"+e.extra+"\r\n", "GET", 3*time.Second)
					if a.status != 502 || a.header.Get("Injected") != "" || a.header.Get("X-Bad") != "" || strings.Contains(rc.got.String(), bad[path]) {
						t.Errorf("%s: GET %s (X-Bad: %q): %s, want 502; the client read:\n%q", s.who, path, bad[path], a, rc.got)
					}
				}
			}
		})
	}
}

// ---- 9. lenient chunk parsing of a request body ----

// A chunk not followed by CRLF ("5\r\nhelloX0\r\n\r\n") is malformed, as is a bare LF
// ending the chunk data or the chunk-size line: the gateway answers 400 and closes, and
// what follows (GET /hidden) never reaches the instance. net/http refuses them too (its
// proxy answers 502: the body fails while it forwards it) and closes.
func TestDesyncMalformedChunkedRequest(t *testing.T) {
	const svc = "desync-chunk"
	h := host(svc)
	hidden := "GET /hidden HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
	cases := []struct{ name, body string }{
		{"data not followed by CRLF", "5\r\nhelloX0\r\n\r\n"},
		{"bare LF after the data", "5\r\nhello\n0\r\n\r\n"},
		{"bare LF after the size", "5\nhello\r\n0\r\n\r\n"},
	}
	for _, s := range bothSides(t, svc, serveEach(echoTarget), nil) {
		for _, tc := range cases {
			rc := dialRaw(t, s.addr)
			a := rc.do("POST /chunk HTTP/1.1\r\nHost: "+h+"\r\nTransfer-Encoding: chunked\r\n\r\n"+tc.body+hidden, "POST", 5*time.Second)
			closed, extra, _ := rc.waitClose(3 * time.Second)
			switch {
			case s.who == "rouse" && (a.err != nil || a.status != 400):
				t.Errorf("%s: %s: %s, want 400", s.who, tc.name, a)
			case s.who != "rouse" && a.err == nil && a.status < 400:
				t.Errorf("%s: %s: %s, want an error status", s.who, tc.name, a)
			}
			if !closed || len(extra) > 0 {
				t.Errorf("%s: %s: after the answer closed=%v, then read %q; want closed, nothing more", s.who, tc.name, closed, extra)
			}
		}
		if seen := s.be.find("/hidden"); len(seen) > 0 {
			t.Errorf("%s: the bytes after a malformed chunk reached the instance as a request: %v", s.who, seen)
		}
	}
}

// ---- lingering close ----

// A bad request pipelined behind a large response, with more bytes after it: the gateway
// answers 400 and closes, but not before the client has had the earlier response and the
// 400 — closing with the client's later bytes unread would reset the connection and drop
// what was not yet delivered (RFC 9112 §9.6). Found by FuzzPipelineHostile; net/http's
// server lingers the same way. The client reads slowly, so the large response is still
// in flight when the gateway reaches the bad request.
func TestDesyncLingeringClose(t *testing.T) {
	const big = 2 << 20
	be := newRecBackend(t, serveEach(func(c *recConn, r *recReq) bool {
		return c.write(okResponse(strings.Repeat("b", big))) == nil
	}))
	g := routeBackend(t, "desync-linger", be, nil)
	rc := dialRaw(t, g.PublicAddr())
	junk := strings.Repeat("j", 100<<10)
	if err := rc.send("GET /big HTTP/1.1\r\nHost: " + host("desync-linger") + "\r\n\r\nBAD\r\n\r\n" + junk); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the scenario: a client that is slow to read
	if a := rc.read("GET", 10*time.Second); a.err != nil || a.status != 200 || len(a.body) != big {
		t.Fatalf("the response before the bad request: %d, %d of %d body bytes, %v", a.status, len(a.body), big, a.err)
	}
	if a := rc.read("GET", 5*time.Second); a.status != 400 {
		t.Fatalf("the bad request: %s", a)
	}
	if closed, _, _ := rc.waitClose(5 * time.Second); !closed {
		t.Fatal("the connection stayed open after the 400")
	}
}
