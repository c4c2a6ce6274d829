package faults

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
)

// BenchmarkParallelWake is the parallel wake on the multi-node cluster (make
// bench-chaos): N services at zero on three workers, one request each at once through
// the two gateways; it prints p50, p95 and max from request to answer and how many were
// 200. e2e/wake measures the same on one node, with where the time goes.
func BenchmarkParallelWake(b *testing.B) {
	for _, n := range []int{25, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			parallelWake(b, n)
			b.ReportMetric(0, "ns/op")
		})
	}
}

func parallelWake(tb testing.TB, n int) {
	p := env
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("wake%d-%03d", n, i)
	}
	defer p.deleteAll(tb, names)
	// Applied four at a time: each is at zero (initial = 0), so apply returns once the
	// revision is registered and routed, without starting anything.
	for _, err := range fourAtATime(names, func(name string) error { return p.apply(name, "min = 0\n    initial = 0\n    max = 1") }) {
		fatalIf(tb, err)
	}
	var wg sync.WaitGroup
	cl := p.client(90 * time.Second)
	type result struct {
		took time.Duration
		code int
		err  error
	}
	res := make([]result, n)
	start := make(chan struct{})
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			resp, err := cl.Get(fmt.Sprintf("http://%s.default.localhost/", name))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				res[i] = result{time.Since(t0), resp.StatusCode, nil}
				return
			}
			res[i] = result{time.Since(t0), 0, err}
		}()
	}
	close(start)
	wg.Wait()
	var lat []time.Duration
	ok := 0
	for _, r := range res {
		if r.code == http.StatusOK {
			ok++
		} else {
			tb.Logf("a wake failed: %d %v", r.code, r.err)
		}
		lat = append(lat, r.took)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	line := fmt.Sprintf("parallel wake, %d services at once, 3 workers: p50 %v, p95 %v, max %v, %d/%d answered 200",
		n, loadgen.Percentile(lat, 50).Round(10*time.Millisecond), loadgen.Percentile(lat, 95).Round(10*time.Millisecond),
		lat[len(lat)-1].Round(10*time.Millisecond), ok, n)
	tb.Log(line)
	p.notes = append(p.notes, line)
	if ok != n {
		tb.Errorf("%d of %d wakes failed", n-ok, n)
	}
}

// deleteAll removes the services through the CLI, four at a time.
func (p *platform) deleteAll(tb testing.TB, names []string) {
	for _, err := range fourAtATime(names, func(name string) error {
		cmd := exec.Command(p.rouse, "delete", name)
		cmd.Env = append(os.Environ(), p.c.Env()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("rouse delete %s: %v\n%s", name, err, out)
		}
		return nil
	}) {
		tb.Error(err)
	}
}

// fourAtATime calls f for every name, four at once, and returns the errors.
func fourAtATime(names []string, f func(string) error) []error {
	errs := make(chan error, len(names))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs <- f(name)
		})
	}
	wg.Wait()
	close(errs)
	var out []error
	for err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}
