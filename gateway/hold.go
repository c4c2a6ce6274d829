package gateway

import (
	"time"

	"github.com/rouse-run/rouse/gateway/balance"
	"github.com/rouse-run/rouse/gateway/http1"
)

// acquire gets a slot on an instance of rev: at once when one is free, else by holding
// the request while the revision wakes or queueing it while its instances are full. cold
// is how long it was held for a cold start; a failure says how to answer instead.
// gone, when it closes, means the client left (an HTTP/2 stream reset): the place in the
// queue is given up at once (nil for a connection that waits for its answer).
func (g *Gateway) acquire(rev *revision, start, deadline time.Time, gone <-chan struct{}) (*balance.Instance[*backend], time.Duration, *failure) {
	if in := rev.pool.TryAcquire(); in != nil {
		return in, 0, nil
	}
	if f := rev.failed(start); f != nil {
		return nil, 0, f // it failed to start: no hold until its backoff passes
	}
	in, w, held, err := rev.pool.Acquire()
	if err != nil {
		return nil, 0, &failure{&http1.Error{Status: 503, Reason: "overflow", Msg: "rouse: revision " + rev.name + " is at capacity: every instance is busy and the queue is full\n"}, "1"}
	}
	if in != nil {
		return in, 0, nil
	}
	if w.Held {
		// The failure record may have landed (and failed the held requests) between the
		// check above and the hold.
		if f := rev.failed(g.clk.Now()); f != nil {
			if in = rev.pool.Cancel(w); in != nil {
				return in, 0, nil
			}
			return nil, 0, f
		}
	}
	if held > 0 && held&(held-1) == 0 {
		g.activation() // 1, 2, 4, 8… held: tell scalers now, and again as the burst grows
	}
	if w.Held {
		rev.maybeFollow()
	}
	rev.maybeProbe()
	waitStart := g.clk.Now()
	limit := deadline.Sub(waitStart)
	// ownDeadline: the request's own deadline (a gRPC call's grpc-timeout) ends the hold
	// before the activation timeout would.
	ownDeadline := !w.Held
	if w.Held {
		act := rev.activationTimeout() - waitStart.Sub(start)
		ownDeadline = limit < act
		limit = min(limit, act)
	}
	t := g.clk.NewTimer(limit)
	select {
	case in = <-w.C:
	case <-t.C():
		in = rev.pool.Cancel(w)
	case <-g.drainHard:
		in = rev.pool.Cancel(w)
	case <-gone:
		if in = rev.pool.Cancel(w); in == nil {
			return nil, 0, &failure{errClientGone, ""}
		}
	}
	t.Stop()
	if in == nil {
		_, _, ready := rev.pool.Stats()
		var failed *failure
		if w.Held && ready == 0 {
			failed = rev.failed(g.clk.Now())
		}
		switch {
		case rev.isRetired():
			return nil, 0, &failure{&http1.Error{Status: 503, Reason: "retired", Msg: "rouse: revision " + rev.name + " is no longer routed\n"}, "1"}
		case failed != nil:
			return nil, 0, failed // its instances failed to start: the scaler's record says why
		case w.Held && ready == 0 && ownDeadline:
			return nil, 0, &failure{&http1.Error{Status: 504, Reason: "deadline_while_held", Msg: "rouse: revision " + rev.name + " had no ready instance within the request's deadline of " + deadline.Sub(start).Round(time.Millisecond).String() + "\n"}, ""}
		case w.Held && ready == 0:
			return nil, 0, &failure{&http1.Error{Status: 503, Reason: "activation_timeout", Msg: "rouse: revision " + rev.name + " could not be started: no instance became ready within " + rev.activationTimeout().String() + "\n"}, "10"}
		default:
			return nil, 0, &failure{&http1.Error{Status: 504, Reason: "queue_timeout", Msg: "rouse: revision " + rev.name + " had no free instance within its timeout of " + rev.timeout().String() + "\n"}, ""}
		}
	}
	var cold time.Duration
	if w.Held {
		cold = g.clk.Now().Sub(waitStart)
		rev.cold.Observe(cold.Seconds())
	}
	return in, cold, nil
}
