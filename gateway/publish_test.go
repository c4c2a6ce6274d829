package gateway_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

// While Consul refuses its re-registration, a gateway keeps serving the new table and
// retries publishing its routes index each second; once Consul accepts again, the index
// the CLI waits for shows up. Consul is real; a proxy in front of it refuses the
// registrations on demand.
func TestRoutesIndexPublishRetries(t *testing.T) {
	target, err := url.Parse("http://" + cluster.ConsulAddr)
	if err != nil {
		t.Fatal(err)
	}
	var refusing atomic.Bool
	var refused atomic.Int64
	fwd := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refusing.Load() && r.Method == http.MethodPut && r.URL.Path == "/v1/agent/service/register" {
			refused.Add(1)
			http.Error(w, "injected failure", http.StatusInternalServerError)
			return
		}
		fwd.ServeHTTP(w, r)
	}))
	// Closed after the gateway stops (cleanups run last-in first-out): Close waits for the
	// gateway's long polls through the proxy, which end only with the gateway.
	t.Cleanup(proxy.Close)
	viaProxy, err := consulapi.NewClient(&consulapi.Config{Address: proxy.URL, Token: cluster.ConsulToken})
	if err != nil {
		t.Fatal(err)
	}

	const id = "gw-publish"
	g := startGateway(t, func(c *gateway.Config) { c.Consul, c.Register, c.ID = viaProxy, true, id })
	published := func() uint64 {
		svcs, err := cluster.Consul.Agent().Services()
		if err != nil || svcs[id] == nil {
			return 0
		}
		n, _ := strconv.ParseUint(svcs[id].Meta[gauges.MetaRoutesIndex], 10, 64)
		return n
	}
	poll.Until(t, 10*time.Second, "the routes index published", func() error {
		if idx := g.RoutesIndex(); idx == 0 || published() != idx {
			return fmt.Errorf("published routes index %d, serving %d", published(), idx)
		}
		return nil
	})

	refusing.Store(true)
	setRoute(t, "publish")
	rec, _, err := cluster.Consul.KV().Get("rouse/services/"+ns+"/publish", nil)
	if err != nil || rec == nil {
		t.Fatalf("read the record: %v", err)
	}
	want := rec.ModifyIndex
	poll.Until(t, 10*time.Second, "the written route served", func() error {
		if g.RoutesIndex() < want {
			return fmt.Errorf("serving index %d, want ≥ %d", g.RoutesIndex(), want)
		}
		if refused.Load() < 2 {
			return fmt.Errorf("%d registrations refused, want a first try and a retry", refused.Load())
		}
		return nil
	})
	if p := published(); p >= want {
		t.Fatalf("Consul refused every registration, yet shows routes index %d ≥ %d", p, want)
	}

	refusing.Store(false)
	start := time.Now()
	poll.Until(t, 5*time.Second, "the routes index published once Consul accepts", func() error {
		if p := published(); p < want {
			return fmt.Errorf("published routes index %d, want ≥ %d", p, want)
		}
		return nil
	})
	t.Logf("%d registrations refused; published %v after Consul accepted again", refused.Load(), time.Since(start).Round(time.Millisecond))
}
