// Package watchloop is rouse's one watcher loop: an index-driven blocking-query loop with a
// context and capped exponential backoff, in the manner of Consul's api/watch. The
// gateway follows Consul with it (gateway/watch), the scaler follows Nomad's job list and
// each gateway's /activations long poll with it. The loop does no I/O and no logging of
// its own: the fetch does the query, the callbacks say what a failure means to the caller.
package watchloop

import (
	"context"
	"time"

	"github.com/rouse-run/rouse/internal/clock"
)

// Fetch runs one query that answers once the server's index passes waitIndex (or its own
// wait ends), does what the answer means, and returns the answer's index.
type Fetch func(ctx context.Context, waitIndex uint64) (next uint64, err error)

// Config of one loop.
type Config struct {
	// Clock paces the backoff and Every (nil: the wall clock).
	Clock clock.Clock
	// Backoff is the wait after failures in a row: Min after the first, doubling to Max.
	Backoff Backoff
	// Every, if positive, is the least time from the start of one successful fetch to the
	// next: the scaler lists Nomad's jobs at most once a tick however busy Nomad is.
	Every time.Duration
	// ZeroBlocks says the server blocks at index 0 too (rouse's /activations). By
	// default index 0 means "answer at once" (Consul, Nomad), so an answer with index 0
	// is waited on as 1: a buggy server cannot turn the loop into a busy poll.
	ZeroBlocks bool
	// OnError, if set, is told each failed fetch (never one that failed because ctx
	// ended): the error, how many failed in a row, and the wait before the next.
	OnError func(err error, failures int, retryIn time.Duration)
	// OnRecover, if set, is called on the first success after failures.
	OnRecover func()
}

// Run calls fetch until ctx ends. Index handling follows Consul's rules: the next query
// waits on the index of the last answer, and an index that went backwards (a restored
// snapshot, a restarted server) starts over from 0.
func Run(ctx context.Context, cfg Config, fetch Fetch) {
	clk := cfg.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	backoff := cfg.Backoff
	var idx uint64
	failures := 0
	for ctx.Err() == nil {
		start := clk.Now()
		next, err := fetch(ctx, idx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			wait := backoff.Next()
			if cfg.OnError != nil {
				cfg.OnError(err, failures, wait)
			}
			clock.Sleep(ctx, clk, wait)
			continue
		}
		if failures > 0 {
			failures = 0
			backoff.Reset()
			if cfg.OnRecover != nil {
				cfg.OnRecover()
			}
		}
		idx = NextIndex(idx, next, cfg.ZeroBlocks)
		if cfg.Every > 0 {
			clock.Sleep(ctx, clk, cfg.Every-clk.Now().Sub(start))
		}
	}
}

// NextIndex is the index the query after an answer at next waits on, having waited on
// prev: next, except that an index that went backwards resets to 0 and, where 0 means
// "do not block", 0 becomes 1.
func NextIndex(prev, next uint64, zeroBlocks bool) uint64 {
	switch {
	case next < prev:
		return 0
	case next == 0 && !zeroBlocks:
		return 1
	}
	return next
}

// Backoff is capped exponential backoff: Next returns Min, then twice the last, up to
// Max; Reset starts over. The zero value waits nothing, so every user sets both.
type Backoff struct {
	Min, Max time.Duration
	last     time.Duration
}

// Next is the wait after one more failure in a row.
func (b *Backoff) Next() time.Duration {
	b.last = min(max(2*b.last, b.Min), b.Max)
	return b.last
}

// Reset forgets the failures: the next wait is Min again.
func (b *Backoff) Reset() { b.last = 0 }
