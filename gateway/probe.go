package gateway

import (
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/upstream"
	"github.com/rouse-run/rouse/gateway/watch"
)

// Probing schedule for a registered-but-not-yet-passing instance of a revision with
// waiting requests: fast at first (an app answers ~150 ms after scale-up, its Consul
// check may pass only after ~900 ms), then slower for an app that is slow to start.
//
// Attempts are hedged: a new one starts every interval while earlier ones are still out
// (up to probeHedge per instance), and the first 2xx wins, so one silent connection never
// holds a wake for probeTimeout. A proxy in front of the instance can accept before it can
// forward: docker's userland proxy for a published port does.
const (
	probeFast       = 5 * time.Millisecond
	probeFastFor    = 3 * time.Second
	probeSlow       = 100 * time.Millisecond
	probeTimeout    = time.Second
	probeHedge      = 4
	probeDefaultURI = "/"
)

// maybeProbeLocked starts the prober when there are candidates and requests waiting.
// Requests that get queued call maybeProbe too, so the two always meet.
func (r *revision) maybeProbeLocked() {
	if r.probing || r.retired || len(r.candidates) == 0 {
		return
	}
	if _, waiting, _ := r.pool.Stats(); waiting == 0 {
		return
	}
	r.probing = true
	go r.probeLoop()
}

func (r *revision) maybeProbe() {
	r.mu.Lock()
	r.maybeProbeLocked()
	r.mu.Unlock()
}

// probeResult is one finished attempt.
type probeResult struct {
	b  *backend
	ok bool
}

// probeLoop probes the candidates until one answers (it becomes routable and the pool
// releases the waiters), none is left, or nobody waits any more.
func (r *revision) probeLoop() {
	start := r.g.clk.Now()
	// Attempts still out when the loop ends report into done's select and go away.
	done := make(chan struct{})
	defer close(done)
	results := make(chan probeResult)
	out := map[*backend]int{} // attempts in flight per instance
	for {
		r.mu.Lock()
		cands := append([]*balance.Instance[*backend](nil), r.candidates...)
		_, waiting, _ := r.pool.Stats()
		if len(cands) == 0 || waiting == 0 || r.retired || r.g.bgCtx.Err() != nil {
			r.probing = false
			r.mu.Unlock()
			return
		}
		paths := make([]string, len(cands))
		for i, c := range cands {
			paths[i] = c.Backend.probePath
		}
		r.mu.Unlock()

		for i, c := range cands {
			b := c.Backend
			if out[b] >= probeHedge {
				continue
			}
			out[b]++
			go func() {
				ok := r.g.probe(r, b, paths[i])
				select {
				case results <- probeResult{b, ok}:
				case <-done:
				}
			}()
		}

		wait := probeFast
		if r.g.clk.Now().Sub(start) > probeFastFor {
			wait = probeSlow
		}
		t := r.g.clk.NewTimer(wait)
		var ok []*backend
	collect:
		for {
			select {
			case res := <-results:
				out[res.b]--
				if res.ok {
					ok = append(ok, res.b)
					break collect
				}
				r.g.metrics.probes.WithLabelValues("not_ready").Inc()
			case <-t.C():
				break collect
			case <-r.g.drainHard: // held requests give up: nobody waits for a probe
				t.Stop()
				r.mu.Lock()
				r.probing = false
				r.mu.Unlock()
				return
			}
		}
		t.Stop()
		if len(ok) > 0 {
			for _, b := range ok {
				b.probedOK.Store(true)
				r.g.metrics.probes.WithLabelValues("ready").Inc()
				r.g.log.Info("instance answered the gateway's readiness probe; routing to it before its Consul check passes",
					zap.String("revision", r.key), zap.String("instance", b.addr), zap.Duration("probing_for", r.g.clk.Now().Sub(start)))
			}
			r.mu.Lock()
			r.recomputeLocked() // may start a new loop for the remaining candidates
			r.probing = false
			r.maybeProbeLocked()
			r.mu.Unlock()
			return
		}
	}
}

// probe asks an instance of rev for its readiness path (what Consul's HTTP check asks)
// and accepts a 2xx; with no HTTP check known it accepts a TCP connection — except behind
// rouse's guard, whose port accepts before the app does: there only Consul's check, which
// goes to the app itself, makes the instance routable.
func (g *Gateway) probe(rev *revision, b *backend, path string) bool {
	if rev.config().H2C() && path != "" {
		return g.probeH2C(b.addr, path)
	}
	if path == "" || path == watch.ProbeGRPC {
		if rev.guarded() {
			return false
		}
		c, err := net.DialTimeout("tcp", b.addr, probeTimeout)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	now := g.clk.Now()
	return upstream.Probe(b.addr, path, now, now.Add(probeTimeout))
}
