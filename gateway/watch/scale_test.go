package watch

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// BenchmarkEndpoints10k measures the endpoints watcher against a real Consul holding
// 10 000 rouse revisions (one instance each, on 4 nodes): the first load, and the time from
// a registration or a deregistration to the watcher's new state. Run with
//
//	go test -run '^$' -bench Endpoints10k -benchtime 20x ./gateway/watch/
func BenchmarkEndpoints10k(b *testing.B) {
	const revisions, nodes = 10000, 4
	bins, err := agents.FindBinaries()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ag, err := agents.StartConsul(ctx, agents.ConsulOptions{Bin: bins.Consul, Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer ag.Stop(10 * time.Second)
	c, err := ag.Client()
	if err != nil {
		b.Fatal(err)
	}
	register := func(i int) error {
		node := fmt.Sprintf("node-%d", i%nodes)
		name := fmt.Sprintf("svc%d-00001", i)
		_, err := c.Catalog().Register(&consulapi.CatalogRegistration{
			Node: node, Address: fmt.Sprintf("10.0.0.%d", i%nodes+1),
			Service: &consulapi.AgentService{ID: name + "-a", Service: name, Port: 20000 + i%40000,
				Tags: []string{"rouse", "rouse.service=" + name[:len(name)-6]}, Meta: map[string]string{revmeta.MetaReadinessPath: "/healthz"}},
			Check: &consulapi.AgentCheck{Node: node, CheckID: "ready-" + name, Name: "readiness", Status: consulapi.HealthPassing, ServiceID: name + "-a"},
		}, nil)
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < revisions; i += 8 {
				if err := register(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("registered %d revisions in %s", revisions, time.Since(start).Round(time.Millisecond))

	checks, meta, err := c.Health().State(consulapi.HealthAny, &consulapi.QueryOptions{Filter: stateFilter})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	insts := groupChecks(checks)
	b.Logf("state query: %d checks in %s (server side %s); grouping %s", len(checks), meta.RequestTime.Round(time.Microsecond), meta.RequestTime, time.Since(t0))

	w := NewEndpoints(c, zap.NewNop(), clock.Real{}, nil)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	start = time.Now()
	go w.Run(wctx)
	for w.Latest() == nil || len(w.Latest().Services) < revisions {
		time.Sleep(5 * time.Millisecond)
	}
	b.Logf("first load: %d services in %s with %d catalog reads (%d instances grouped)", len(w.Latest().Services), time.Since(start).Round(time.Millisecond), w.CatalogFetches(), len(insts))
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "first-load-ms")

	b.ResetTimer()
	var reg, dereg time.Duration
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("new%d-00001", i)
		node := "node-0"
		t := time.Now()
		_, err := c.Catalog().Register(&consulapi.CatalogRegistration{Node: node, Address: "10.0.0.1",
			Service: &consulapi.AgentService{ID: name + "-a", Service: name, Port: 1234, Tags: []string{"rouse"}},
			Check:   &consulapi.AgentCheck{Node: node, CheckID: "ready-" + name, Name: "r", Status: consulapi.HealthCritical, ServiceID: name + "-a"}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		for w.Latest().Services[name] == nil {
			time.Sleep(100 * time.Microsecond)
		}
		reg += time.Since(t)
		t = time.Now()
		if _, err := c.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: node, ServiceID: name + "-a"}, nil); err != nil {
			b.Fatal(err)
		}
		for w.Latest().Services[name] != nil {
			time.Sleep(100 * time.Microsecond)
		}
		dereg += time.Since(t)
	}
	b.StopTimer()
	// The same registration seen by a revision's own watch (what a waking revision uses).
	var follow time.Duration
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("wake%d-00001", i)
		seen := make(chan time.Time, 1)
		fctx, fcancel := context.WithCancel(ctx)
		ready := make(chan struct{})
		go FollowService(fctx, c, zap.NewNop(), clock.Real{}, name, func(svc *Service, _ uint64) bool {
			select {
			case <-ready:
			default:
				close(ready) // the first (immediate) answer: the query now blocks
			}
			if svc != nil {
				seen <- time.Now()
				return true
			}
			return false
		})
		<-ready
		time.Sleep(20 * time.Millisecond)
		t := time.Now()
		_, err := c.Catalog().Register(&consulapi.CatalogRegistration{Node: "node-1", Address: "10.0.0.2",
			Service: &consulapi.AgentService{ID: name + "-a", Service: name, Port: 1234, Tags: []string{"rouse"}},
			Check:   &consulapi.AgentCheck{Node: "node-1", CheckID: "ready-" + name, Name: "r", Status: consulapi.HealthCritical, ServiceID: name + "-a"}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		follow += (<-seen).Sub(t)
		fcancel()
	}
	b.ReportMetric(float64(follow.Microseconds())/float64(b.N)/1000, "register-to-own-watch-ms")
	b.ReportMetric(float64(reg.Microseconds())/float64(b.N)/1000, "register-to-state-ms")
	b.ReportMetric(float64(dereg.Microseconds())/float64(b.N)/1000, "deregister-to-state-ms")
}
