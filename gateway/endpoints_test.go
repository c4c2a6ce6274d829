package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
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

// Scale-down: Nomad deregisters an instance from Consul, waits its shutdown_delay, then
// signals it. From the moment the gateway sees the deregistration no new request goes to
// that instance, and no request fails meanwhile.
func TestInstanceRemovedGetsNoRequests(t *testing.T) {
	const rev = "pair-00001"
	deploy(t, revision{svc: "pair", name: rev, count: 2})
	setRoute(t, "pair", store.RouteTarget{Revision: rev, Percent: 100})
	before := cluster.WaitPassing(t, rev, 2)
	g := startGateway(t, nil)
	waitReady(t, g, rev, 2)
	c := client(g, 8)

	type hit struct {
		start    time.Time
		instance string
		status   int
		err      error
	}
	var mu sync.Mutex
	var hits []hit
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ { // bounded: the test stops it long before
				select {
				case <-stop:
					return
				default:
				}
				s := time.Now()
				a := get(c, host("pair"), "/")
				mu.Lock()
				hits = append(hits, hit{s, a.header.Get("X-Instance"), a.status, a.err})
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)

	scale(t, rev, 1)
	// Which instance went, and when Consul and the gateway each stopped listing it.
	var victim string
	var consulGone, gatewayGone time.Time
	deadline := time.Now().Add(30 * time.Second)
	for (consulGone.IsZero() || gatewayGone.IsZero()) && time.Now().Before(deadline) {
		if consulGone.IsZero() {
			es, _, err := cluster.Consul.Catalog().Service(rev, "", nil)
			if err == nil && len(es) == 1 {
				consulGone = time.Now()
				for _, b := range before {
					if b.Service.Port != es[0].ServicePort {
						victim = rev + "@" + strconv.Itoa(b.Service.Port)
					}
				}
			}
		}
		if !consulGone.IsZero() && gatewayGone.IsZero() && gaugeOf(t, g, rev).Ready == 1 {
			gatewayGone = time.Now()
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // keep the load on through part of the shutdown delay
	close(stop)
	wg.Wait()
	if victim == "" || gatewayGone.IsZero() {
		t.Fatalf("instance never left: victim=%q consul=%v gateway=%v", victim, consulGone, gatewayGone)
	}
	react := gatewayGone.Sub(consulGone)
	t.Logf("gateway stopped routing to %s %s after Consul deregistered it (both polled every 2ms)", victim, react.Round(time.Millisecond))
	if react > time.Second {
		t.Fatalf("the gateway took %s to notice the deregistration", react)
	}
	var after, toVictim int
	for _, h := range hits {
		if h.err != nil || h.status != 200 {
			t.Fatalf("request during scale-down failed: %d %v", h.status, h.err)
		}
		if h.start.After(gatewayGone) {
			after++
			if h.instance == victim {
				toVictim++
			}
		}
	}
	if after < 50 || toVictim != 0 {
		t.Fatalf("%d requests after the gateway saw the deregistration, %d of them to the removed instance", after, toVictim)
	}
	t.Logf("%d requests, all 200; %d after the deregistration, none to the removed instance", len(hits), after)
}

// An instance that refuses connections (registered in Consul, process gone) costs a
// retry on another instance, never an error.
func TestRetryOnConnectionRefused(t *testing.T) {
	const rev = "ghost-00001"
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Instance", "live")
		fmt.Fprintln(w, "ok")
	}))
	defer live.Close()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()
	livePort := live.Listener.Addr().(*net.TCPAddr).Port
	agent := cluster.Consul.Agent()
	for id, port := range map[string]int{"ghost-live": livePort, "ghost-dead": deadPort} {
		err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: rev, Address: "127.0.0.1", Port: port,
			Tags:  []string{revmeta.TagRouse, revmeta.TagServicePrefix + "ghost"},
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { agent.ServiceDeregister(id) })
	}
	if err := store.New(cluster.Consul).PutRevision(context.Background(), revmeta.Defaults(ns, "ghost", rev)); err != nil {
		t.Fatal(err)
	}
	setRoute(t, "ghost", store.RouteTarget{Revision: rev, Percent: 100})
	g := startGateway(t, nil)
	waitReady(t, g, rev, 2)
	c := client(g, 4)
	for i := 0; i < 100; i++ {
		if a := get(c, host("ghost"), "/"); a.status != 200 || a.header.Get("X-Instance") != "live" {
			t.Fatalf("request %d: %d %q %v", i, a.status, a.body, a.err)
		}
	}
	// POST with a body too: nothing was sent before the refusal, so it is safe to retry.
	resp, err := c.Post("http://"+host("ghost")+"/", "text/plain", strings.NewReader(strings.Repeat("x", 20000)))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %v %v", resp, err)
	}
	resp.Body.Close()
}

// If Consul becomes unreachable the gateway keeps serving its last table, and picks up
// changes again when Consul is back.
func TestConsulUnreachableKeepsServing(t *testing.T) {
	sharedRevisions(t)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00001", Percent: 100})
	px := newTCPProxy(t, cluster.ConsulAddr)
	cc := consulapi.DefaultConfig()
	cc.Address = px.addr()
	consul, err := consulapi.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, func(c *gateway.Config) { c.Consul = consul })
	waitReady(t, g, "shared-00001", 1)
	c := client(g, 2)
	px.cut(true)
	setRoute(t, "shared", store.RouteTarget{Revision: "shared-00002", Percent: 100}) // not seen while cut
	for i := 0; i < 20; i++ {
		if a := get(c, host("shared"), "/"); a.status != 200 || a.header.Get("X-Revision") != "shared-00001" {
			t.Fatalf("while Consul is unreachable: %d %q", a.status, a.header.Get("X-Revision"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	px.cut(false)
	poll.Until(t, 15*time.Second, "the gateway following Consul again", func() error {
		if a := get(c, host("shared"), "/"); a.header.Get("X-Revision") != "shared-00002" {
			return fmt.Errorf("after Consul came back: %q", a.header.Get("X-Revision"))
		}
		return nil
	})
}

// tcpProxy forwards to a target and can cut every connection on demand.
type tcpProxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.cut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { copyClose(u, c) }()
			go func() { copyClose(c, u) }()
		}
	}()
	return p
}

func copyClose(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) cut(down bool) {
	p.down.Store(down)
	if !down {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// When the only instance refuses connections (its node lost, Consul not told yet), the
// requests are held as for a wake, not failed: the replacement answers them once it is
// registered. (The gateway used to answer 502 after four refused dials, about 3 s, while
// Consul takes about 5 s to notice a lost node and Nomad longer to replace it.)
func TestRefusedOnlyInstanceHolds(t *testing.T) {
	const rev = "lone-00001"
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()
	agent := cluster.Consul.Agent()
	reg := func(id string, port int) {
		err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: rev, Address: "127.0.0.1", Port: port,
			Tags:  []string{revmeta.TagRouse, revmeta.TagServicePrefix + "lone"},
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { agent.ServiceDeregister(id) })
	}
	reg("lone-dead", deadPort)
	if err := store.New(cluster.Consul).PutRevision(context.Background(), revmeta.Defaults(ns, "lone", rev)); err != nil {
		t.Fatal(err)
	}
	setRoute(t, "lone", store.RouteTarget{Revision: rev, Percent: 100})
	g := startGateway(t, nil)
	waitReady(t, g, rev, 1)
	c := client(g, 4)
	answers := make(chan answer, 3)
	for range 3 {
		go func() { answers <- get(c, host("lone"), "/") }()
	}
	select {
	case a := <-answers:
		t.Fatalf("answered while the only instance refuses: %d %q %v", a.status, a.body, a.err)
	case <-time.After(5 * time.Second): // longer than the four 1 s down-marks the old cap allowed
	}
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Instance", "replacement")
		fmt.Fprintln(w, "ok")
	}))
	defer live.Close()
	reg("lone-live", live.Listener.Addr().(*net.TCPAddr).Port)
	if err := agent.ServiceDeregister("lone-dead"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if a := <-answers; a.status != 200 || a.header.Get("X-Instance") != "replacement" {
			t.Fatalf("held request: %d %q %v", a.status, a.body, a.err)
		}
	}
}

// An instance that closes new connections without answering (it is stopping, or its
// node is going down) costs an idempotent request a retry on another instance, never an
// error, on HTTP/1.1 and on HTTP/2; a POST is not sent twice: it gets the 502. (An
// idempotent request on such a fresh connection used to be answered 502 at once; a node
// loss under load showed it as hundreds of 502s.)
func TestRetryIdempotentOnClosedConnection(t *testing.T) {
	const svc = "slam"
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Instance", "live")
		fmt.Fprintln(w, "ok")
	}))
	defer live.Close()
	slam, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer slam.Close()
	var slammed atomic.Int64
	go func() {
		for {
			c, err := slam.Accept()
			if err != nil {
				return
			}
			// Read the request, then close without a byte of answer.
			go func() {
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 4096)
				if n, _ := c.Read(buf); n > 0 {
					slammed.Add(1)
				}
				c.Close()
			}()
		}
	}()
	g := routePorts(t, svc, func(c *revmeta.Config) { c.Protocol = "" }, nil,
		live.Listener.Addr().(*net.TCPAddr).Port, slam.Addr().(*net.TCPAddr).Port)
	for _, h2 := range []bool{false, true} {
		c := clientTo(g.PublicAddr(), h2)
		c.Transport.(*http.Transport).DisableKeepAlives = !h2 // every HTTP/1.1 request a new gateway connection
		before := slammed.Load()
		for i := 0; i < 40; i++ {
			resp, err := c.Get("http://" + host(svc) + "/")
			if err != nil {
				t.Fatalf("h2 %v, GET %d: %v", h2, i, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Instance") != "live" {
				t.Fatalf("h2 %v, GET %d: %d %q", h2, i, resp.StatusCode, resp.Header.Get("X-Instance"))
			}
			time.Sleep(30 * time.Millisecond) // past the slamming instance's second off, now and then
		}
		if slammed.Load() == before {
			t.Fatalf("h2 %v: no request reached the slamming instance: the test proves nothing", h2)
		}
	}
	// A POST that reached the slamming instance is not sent again.
	c := clientTo(g.PublicAddr(), false)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	got502 := false
	for i := 0; i < 40 && !got502; i++ {
		resp, err := c.Post("http://"+host(svc)+"/", "text/plain", strings.NewReader("once"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got502 = resp.StatusCode == 502
		time.Sleep(60 * time.Millisecond)
	}
	if !got502 {
		t.Fatal("no POST met the slamming instance: a POST must not be retried, so one should have got 502")
	}
}
