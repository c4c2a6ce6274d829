package scaler

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/watchloop"
)

// jobWatch keeps the latest job listing of each namespace with one index-driven blocking
// query per namespace, at most one listing per tick. Decoding Nomad's list of 10 000
// revisions with meta costs ~250 ms of CPU, so a quiet cluster must not pay it every tick;
// a busy one pays it at most once a tick.
type jobWatch struct {
	mu      sync.Mutex
	byNS    map[string]listing
	pending int           // namespaces not listed yet
	ready   chan struct{} // closed once every namespace was listed
}

func (s *Scaler) startJobWatch(ctx context.Context) *jobWatch {
	w := &jobWatch{byNS: map[string]listing{}, pending: len(s.cfg.Namespaces), ready: make(chan struct{})}
	for _, ns := range s.cfg.Namespaces {
		go s.watchNamespace(ctx, w, ns)
	}
	return w
}

// watchNamespace keeps ns's listing in w, holding the last one (and so every count)
// while Nomad does not answer; it warns once per outage, not once per retry.
func (s *Scaler) watchNamespace(ctx context.Context, w *jobWatch, ns string) {
	watchloop.Run(ctx, watchloop.Config{
		Clock: s.clock, Backoff: watchloop.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}, Every: s.cfg.Tick,
		OnError: func(err error, failures int, _ time.Duration) {
			if failures == 1 {
				s.log.Warn("listing revision jobs failed; holding counts until Nomad answers", zap.String("namespace", ns), zap.Error(err))
			}
		},
		OnRecover: func() { s.log.Info("listing revision jobs works again", zap.String("namespace", ns)) },
	}, func(ctx context.Context, index uint64) (uint64, error) {
		stubs, next, err := s.jobs.List(ctx, ns, index)
		if err != nil {
			return 0, err
		}
		w.publish(ns, listing{stubs, next})
		return next, nil
	})
}

func (w *jobWatch) publish(ns string, l listing) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.byNS[ns]; !ok {
		w.pending--
		if w.pending == 0 {
			close(w.ready)
		}
	}
	w.byNS[ns] = l
}

// jobs returns the latest listing of every namespace, waiting for the first one; its
// index is the oldest of theirs.
func (w *jobWatch) jobs(ctx context.Context) (listing, bool) {
	select {
	case <-w.ready:
	case <-ctx.Done():
		return listing{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var all listing
	first := true
	for _, l := range w.byNS {
		all.stubs = append(all.stubs, l.stubs...)
		if first || l.index < all.index {
			all.index, first = l.index, false
		}
	}
	return all, true
}
