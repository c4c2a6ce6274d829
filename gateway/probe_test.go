package gateway_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// stallingInstance accepts every connection at once, as docker's userland proxy does for
// a published port; the first stalls connections say nothing for 3 s (the proxy's dial
// into a container whose network is not up yet lost its SYN), later ones answer 200.
func stallingInstance(t *testing.T, stalls int32) (port int, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := accepted.Add(1)
			go func() {
				defer c.Close()
				if n <= stalls {
					_, _ = c.Read(make([]byte, 4096)) // the request, never answered
					time.Sleep(3 * time.Second)
					return
				}
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						break
					}
				}
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

// routeCandidate routes cfg's service to one instance at port, registered in Consul (with
// meta) but not passing, so that the gateway holds requests and probes it itself; it
// returns a gateway that routes it and the ID of the instance's TTL check.
func routeCandidate(t *testing.T, cfg revmeta.Config, port int, meta map[string]string) (*gateway.Gateway, string) {
	t.Helper()
	st := store.New(cluster.Consul)
	ctx := context.Background()
	if err := st.PutRevision(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	agent := cluster.Consul.Agent()
	id := cfg.Revision + "-1"
	err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: id, Name: cfg.Revision, Address: "127.0.0.1", Port: port,
		Tags:  []string{revmeta.TagRouse, revmeta.TagServicePrefix + cfg.Service},
		Meta:  meta,
		Check: &consulapi.AgentServiceCheck{CheckID: id + "-ttl", TTL: "10m", Status: consulapi.HealthCritical},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.ServiceDeregister(id)
		_ = st.DeleteService(ctx, ns, cfg.Service)
		_ = st.DeleteRevision(ctx, ns, cfg.Revision)
	})
	setRoute(t, cfg.Service, store.RouteTarget{Revision: cfg.Revision, Percent: 100})
	g := startGateway(t, nil)
	waitReady(t, g, cfg.Revision, 0)
	return g, id + "-ttl"
}

// A waking instance whose first connections are accepted but never answered (a container
// behind docker's userland proxy) is found by the next probe attempt, not after the probe
// timeout: before probes were hedged, every container wake took 1.1 s.
func TestProbeHedgesASilentConnection(t *testing.T) {
	const svc, rev = "stall", "stall-00001"
	port, accepted := stallingInstance(t, 2)
	cfg := revmeta.Defaults(ns, svc, rev)
	cfg.Timeout = 10 * time.Second
	g, _ := routeCandidate(t, cfg, port, map[string]string{revmeta.MetaReadinessPath: "/healthz"})

	a := get(client(g, 1), host(svc), "/")
	if a.err != nil || a.status != 200 || a.body != "ok\n" {
		t.Fatalf("held request: %d %q %v", a.status, a.body, a.err)
	}
	held := a.header.Get(gateway.ColdStartHeader)
	t.Logf("answered in %s (%s %s) after %d connections to the instance", a.took.Round(time.Millisecond), gateway.ColdStartHeader, held, accepted.Load())
	// Two silent connections cost a serial prober 2 × its 1 s timeout.
	if a.took > 500*time.Millisecond {
		t.Fatalf("the held request took %s: the prober waited on a silent connection", a.took)
	}
	if !strings.HasSuffix(held, "ms") {
		t.Fatalf("%s = %q, want the hold in ms", gateway.ColdStartHeader, held)
	}
}
