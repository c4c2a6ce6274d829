// Package watch follows Consul for the gateway with blocking queries only — never polling:
//
//   - KV: one recursive blocking list of store.Prefix (routes and revision configs).
//   - Endpoints: one blocking query on the health state of every check tagged "rouse" (plus
//     node health), which wakes on any registration, deregistration or status change; the
//     addresses of instances it has not seen yet come from one non-blocking catalog read
//     per service that gained an instance. Status changes and deregistrations need no
//     extra request.
//   - Peers: the passing "rouse-gateway" instances, to share per-instance limits.
//
// Each watcher keeps the latest result behind an atomic pointer and signals "re-read" on
// a size-1 channel; if Consul becomes unreachable the last result stays (the gateway keeps
// serving it) and the loop retries with capped exponential backoff.
package watch

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/gateway/clock"
)

// Backoff bounds for a failing blocking query.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
	// waitTime is how long Consul holds a blocking query open without a change.
	waitTime = 5 * time.Minute
)

// signal is a size-1 "something changed, re-read" channel.
type signal chan struct{}

func newSignal() signal { return make(signal, 1) }

func (s signal) notify() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// fetchFunc runs one query at waitIndex and returns the index of its answer.
type fetchFunc func(ctx context.Context, waitIndex uint64) (uint64, error)

// loop runs fetch as an index-driven blocking-query loop until ctx is done. Index handling
// follows Consul's rules: an index that goes backwards resets to 0, and 0 becomes 1 so a
// buggy answer cannot turn the loop into a busy poll.
func loop(ctx context.Context, name string, log *zap.Logger, clk clock.Clock, onError func(), fetch fetchFunc) {
	var idx uint64
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		next, err := fetch(ctx, idx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if onError != nil {
				onError()
			}
			backoff = min(max(backoff*2, minBackoff), maxBackoff)
			log.Warn("consul watch failed; keeping the last state", zap.String("watch", name), zap.Error(err), zap.Duration("retry_in", backoff))
			t := clk.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
			continue
		}
		if backoff > 0 {
			log.Info("consul watch recovered", zap.String("watch", name))
			backoff = 0
		}
		switch {
		case next < idx:
			idx = 0
		case next == 0:
			idx = 1
		default:
			idx = next
		}
	}
}
