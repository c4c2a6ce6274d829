package watch

import (
	"context"
	"slices"
	"sort"
	"sync/atomic"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/gauges"
)

// GatewayService is the Consul service every gateway registers as.
const GatewayService = gauges.GatewayService

// Peers follows the passing gateways.
type Peers struct {
	consul *consulapi.Client
	log    *zap.Logger
	clock  clock.Clock
	errs   func()

	latest  atomic.Pointer[[]string]
	changed signal
}

// NewPeers returns a peers watcher.
func NewPeers(c *consulapi.Client, log *zap.Logger, clk clock.Clock, onError func()) *Peers {
	return &Peers{consul: c, log: log, clock: clk, errs: onError, changed: newSignal()}
}

// Changed signals that Latest has a new value.
func (w *Peers) Changed() <-chan struct{} { return w.changed }

// Latest is the sorted service IDs of the passing gateways (nil before the first answer).
func (w *Peers) Latest() []string {
	if p := w.latest.Load(); p != nil {
		return *p
	}
	return nil
}

// Run watches until ctx is done.
func (w *Peers) Run(ctx context.Context) {
	loop(ctx, "peers", w.log, w.clock, w.errs, func(ctx context.Context, idx uint64) (uint64, error) {
		entries, meta, err := w.consul.Health().Service(GatewayService, "", true, (&consulapi.QueryOptions{WaitIndex: idx, WaitTime: waitTime}).WithContext(ctx))
		if err != nil {
			return 0, err
		}
		ids := make([]string, 0, len(entries))
		for _, e := range entries {
			ids = append(ids, e.Service.ID)
		}
		sort.Strings(ids)
		if prev := w.latest.Load(); prev == nil || !slices.Equal(*prev, ids) {
			w.latest.Store(&ids)
			w.changed.notify()
		}
		return meta.LastIndex, nil
	})
}
