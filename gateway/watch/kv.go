package watch

import (
	"context"
	"sync/atomic"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/store"
)

// KV follows everything under store.Prefix.
type KV struct {
	consul *consulapi.Client
	log    *zap.Logger
	clock  clock.Clock
	errs   func()

	latest  atomic.Pointer[KVState]
	changed signal
}

// KVState is one decoded listing.
type KVState struct {
	Index    uint64
	Snapshot store.Snapshot
	Errors   []error // records that did not decode (left out of Snapshot)
}

// NewKV returns a KV watcher; onError (may be nil) counts failed queries.
func NewKV(c *consulapi.Client, log *zap.Logger, clk clock.Clock, onError func()) *KV {
	return &KV{consul: c, log: log, clock: clk, errs: onError, changed: newSignal()}
}

// Changed signals that Latest has a new value.
func (w *KV) Changed() <-chan struct{} { return w.changed }

// Latest is the newest listing, nil before the first answer.
func (w *KV) Latest() *KVState { return w.latest.Load() }

// Run watches until ctx is done.
func (w *KV) Run(ctx context.Context) {
	loop(ctx, "kv", w.log, w.clock, w.errs, func(ctx context.Context, idx uint64) (uint64, error) {
		pairs, meta, err := w.consul.KV().List(store.Prefix, (&consulapi.QueryOptions{WaitIndex: idx, WaitTime: waitTime}).WithContext(ctx))
		if err != nil {
			return 0, err
		}
		if prev := w.latest.Load(); prev != nil && meta.LastIndex == prev.Index {
			return meta.LastIndex, nil // the wait ran out with no change
		}
		snap, errs := store.Decode(pairs)
		for _, e := range errs {
			w.log.Warn("ignoring a KV record that does not decode", zap.Error(e))
		}
		w.latest.Store(&KVState{Index: meta.LastIndex, Snapshot: snap, Errors: errs})
		w.changed.notify()
		return meta.LastIndex, nil
	})
}
