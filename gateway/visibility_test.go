package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// revBackend is an in-process instance of a revision: it answers "<revision> tag=<the
// Rouse-Tag header it got>".
func revBackend(t *testing.T, rev string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s tag=%s", rev, r.Header.Get(gateway.TagHeader))
	}))
	t.Cleanup(s.Close)
	return s
}

// registerInstance registers s in Consul as an instance of rev of svc with a passing TTL
// check (what the gateway's endpoint watch reads).
func registerInstance(t *testing.T, svc, rev string, s *httptest.Server) {
	t.Helper()
	port, _ := strconv.Atoi(s.URL[strings.LastIndexByte(s.URL, ':')+1:])
	id := "vis-" + rev
	agent := cluster.Consul.Agent()
	err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: id, Name: rev, Address: "127.0.0.1", Port: port,
		Tags:  []string{revmeta.TagRouse, revmeta.TagServicePrefix + svc},
		Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.ServiceDeregister(id) })
}

// putService writes svc's revision configs and its record: route, visibility and
// tag-header routing, as control's apply does.
func putService(t *testing.T, svc, visibility string, tagHeader bool, route ...store.RouteTarget) {
	t.Helper()
	st, ctx := store.New(cluster.Consul), context.Background()
	for _, rt := range route {
		cfg := revmeta.Defaults(ns, svc, rt.Revision)
		cfg.Timeout = 20 * time.Second
		if err := st.PutRevision(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.DeleteRevision(ctx, ns, rt.Revision) })
	}
	_, err := st.UpdateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
		if cur == nil {
			cur = &store.Service{}
		}
		cur.Route, cur.Visibility, cur.TagHeader, cur.UpdatedAt = route, visibility, tagHeader, time.Now()
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.DeleteService(ctx, ns, svc) })
}

// clientTo is an HTTP/1.1 client (or, with h2, an h2c prior-knowledge one) that dials
// addr whatever the URL's host.
func clientTo(addr string, h2 bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}}
	if h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

type reply struct {
	status int
	proto  int
	body   string
}

func do(t *testing.T, c *http.Client, host, tag string) reply {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+host+"/", nil)
	if tag != "" {
		req.Header.Set(gateway.TagHeader, tag)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.ProtoMajor, string(b)}
}

func internalGateway(t *testing.T) *gateway.Gateway {
	return startGateway(t, func(c *gateway.Config) { c.InternalAddr = "127.0.0.1:0" })
}

// waitInternal waits until g's internal listener routes host.
func waitInternal(t *testing.T, g *gateway.Gateway, h string) {
	t.Helper()
	poll.Until(t, 10*time.Second, "the gateway routing "+h+" inside", func() error {
		if tbl := g.Table(); tbl == nil || tbl.LookupInternal([]byte(h)) == nil {
			return fmt.Errorf("not routed")
		}
		return nil
	})
}

// An internal service is served on the internal listener under the internal domain, over
// HTTP/1.1 and HTTP/2, and the public listener answers 404 for it exactly as for a host
// nobody serves; a public service is served on both listeners.
func TestInternalVisibility(t *testing.T) {
	const svc, pub = "vis-account", "vis-web"
	registerInstance(t, svc, svc+"-00001", revBackend(t, svc+"-00001"))
	registerInstance(t, pub, pub+"-00001", revBackend(t, pub+"-00001"))
	putService(t, svc, store.VisibilityInternal, false, store.RouteTarget{Revision: svc + "-00001", Percent: 100})
	putService(t, pub, "", false, store.RouteTarget{Revision: pub + "-00001", Percent: 100})
	g := internalGateway(t)
	waitReady(t, g, svc+"-00001", 1)
	waitReady(t, g, pub+"-00001", 1)
	if g.InternalAddr() == "" {
		t.Fatal("no internal listener")
	}
	inHost := svc + "." + ns + ".internal"
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "h2c"}[h2], func(t *testing.T) {
			in, out := clientTo(g.InternalAddr(), h2), clientTo(g.PublicAddr(), h2)
			wantProto := map[bool]int{false: 1, true: 2}[h2]
			if r := do(t, in, inHost, ""); r.status != 200 || r.proto != wantProto || !strings.HasPrefix(r.body, svc+"-00001 ") {
				t.Fatalf("internal listener, %s: %+v", inHost, r)
			}
			// The public listener: the internal host, the service under the public
			// domain, and a host nobody serves all get the same 404.
			for _, h := range []string{inHost, host(svc), "nobody." + ns + ".localhost"} {
				r := do(t, out, h, "")
				if want := "rouse: no service for host " + strconv.Quote(h) + "\n"; r.status != 404 || r.body != want {
					t.Fatalf("public listener, %s: %d %q, want 404 %q", h, r.status, r.body, want)
				}
			}
			// A public service: on the public listener, and inside under both domains.
			for _, c := range []struct {
				c *http.Client
				h string
			}{{out, host(pub)}, {in, host(pub)}, {in, pub + "." + ns + ".internal"}} {
				if r := do(t, c.c, c.h, ""); r.status != 200 || !strings.HasPrefix(r.body, pub+"-00001 ") {
					t.Fatalf("public service at %s: %+v", c.h, r)
				}
			}
			// The internal domain is not served on the public listener, even for a
			// public service.
			if r := do(t, out, pub+"."+ns+".internal", ""); r.status != 404 {
				t.Fatalf("public listener served the internal domain: %+v", r)
			}
		})
	}
}

// A request for an internal service with no ready instance is held on the internal
// listener, announced as an activation, and served once an instance appears.
func TestInternalHeldUntilInstance(t *testing.T) {
	const svc = "vis-cold"
	rev := svc + "-00001"
	putService(t, svc, store.VisibilityInternal, false, store.RouteTarget{Revision: rev, Percent: 100})
	g := internalGateway(t)
	inHost := svc + "." + ns + ".internal"
	waitInternal(t, g, inHost)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	listening := make(chan struct{})
	announced := make(chan error, 1)
	go func() { _, err := pollActivations(ctx, g, rev, listening); announced <- err }()
	<-listening
	got := make(chan reply, 1)
	go func() { got <- do(t, clientTo(g.InternalAddr(), false), inHost, "") }()
	if err := <-announced; err != nil {
		t.Fatalf("no activation announced for the held request: %v", err)
	}
	if g := gaugeOf(t, g, rev); g.Held != 1 {
		t.Fatalf("held = %d, want 1", g.Held)
	}
	registerInstance(t, svc, rev, revBackend(t, rev)) // what the scaler's wake would bring
	select {
	case r := <-got:
		if r.status != 200 || !strings.HasPrefix(r.body, rev+" ") {
			t.Fatalf("held request: %+v", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the held request was not served after the instance appeared")
	}
}

// Rouse-Tag on the main host reaches the tag's revision (a 0 % one too) when the service
// turned tag-header routing on; an unknown tag gets the split; with it off the header is
// ignored. The header reaches the instance either way.
func TestTagHeaderRouting(t *testing.T) {
	const on, off = "vis-tags", "vis-notags"
	for _, svc := range []string{on, off} {
		for _, n := range []string{"-00001", "-00002"} {
			registerInstance(t, svc, svc+n, revBackend(t, svc+n))
		}
		putService(t, svc, "", svc == on,
			store.RouteTarget{Revision: svc + "-00002", Percent: 100, Tag: "current"},
			store.RouteTarget{Revision: svc + "-00001", Percent: 0, Tag: "canary"})
	}
	g := internalGateway(t)
	for _, svc := range []string{on, off} {
		waitReady(t, g, svc+"-00001", 1)
		waitReady(t, g, svc+"-00002", 1)
	}
	for _, h2 := range []bool{false, true} {
		for _, listener := range []string{"public", "internal"} {
			addr := g.PublicAddr()
			if listener == "internal" {
				addr = g.InternalAddr()
			}
			c := clientTo(addr, h2)
			name := fmt.Sprintf("%s/h2=%v", listener, h2)
			for _, tc := range []struct {
				host, tag, want string
			}{
				{host(on), "canary", on + "-00001 tag=canary"},
				{host(on), "CANARY", on + "-00001 tag=CANARY"},
				{host(on), "current", on + "-00002 tag=current"},
				{host(on), "nope", on + "-00002 tag=nope"}, // unknown: the split
				{host(on), "", on + "-00002 tag="},
				{"current-" + host(on), "canary", on + "-00002 tag=canary"}, // a tag host is its tag's, whatever the header
				{on + "." + ns + ".internal", "canary", on + "-00001 tag=canary"},
				{host(off), "canary", off + "-00002 tag=canary"}, // off: ignored, forwarded
			} {
				if listener == "public" && strings.HasSuffix(tc.host, ".internal") {
					continue
				}
				if r := do(t, c, tc.host, tc.tag); r.status != 200 || r.body != tc.want {
					t.Errorf("%s: %s with Rouse-Tag %q: %d %q, want %q", name, tc.host, tc.tag, r.status, r.body, tc.want)
				}
			}
		}
	}

	// HTTP/1.1 as sent on the wire: the name in any case, no or extra whitespace around
	// the value, the first of two lines counts, and a Rouse-Tag that Connection names is
	// hop-by-hop: neither used nor forwarded.
	for _, tc := range []struct{ lines, want string }{
		{"rouse-tag:canary \r\n", on + "-00001 tag=canary"},
		{"ROUSE-TAG: \t canary\r\n", on + "-00001 tag=canary"},
		{"Rouse-Tag: nope\r\nRouse-Tag: canary\r\n", on + "-00002 tag=nope"},
		{"Rouse-Tag: canary\r\nConnection: Rouse-Tag\r\n", on + "-00002 tag="},
	} {
		c, err := net.Dial("tcp", g.PublicAddr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host(on)+"\r\n"+tc.lines+"Connection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if resp := string(b); !strings.HasPrefix(resp, "HTTP/1.1 200 ") || !strings.HasSuffix(resp, "\r\n\r\n"+tc.want) {
			t.Errorf("%q: %q, want 200 with body %q", tc.lines, resp, tc.want)
		}
	}
}
