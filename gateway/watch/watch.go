// Package watch follows Consul for the gateway with blocking queries only — never polling:
//
//   - KV: one listing of store.Prefix (routes, revision configs, failure records), then one
//     blocking list of the small store.JournalPrefix and a read of each record it says
//     changed (kv.go; the design is in docs/architecture.md).
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

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/watchloop"
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

// loop runs fetch as an index-driven blocking-query loop (internal/watchloop) until ctx
// is done, with the gateway's policy on failure: onError, a warning, and the last state kept.
func loop(ctx context.Context, name string, log *zap.Logger, clk clock.Clock, onError func(), fetch watchloop.Fetch) {
	watchloop.Run(ctx, watchloop.Config{
		Clock:   clk,
		Backoff: watchloop.Backoff{Min: minBackoff, Max: maxBackoff},
		OnError: func(err error, _ int, retryIn time.Duration) {
			if onError != nil {
				onError()
			}
			log.Warn("consul watch failed; keeping the last state", zap.String("watch", name), zap.Error(err), zap.Duration("retry_in", retryIn))
		},
		OnRecover: func() { log.Info("consul watch recovered", zap.String("watch", name)) },
	}, fetch)
}
