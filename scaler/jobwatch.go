package scaler

import (
	"context"
	"sync"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"
)

// jobWatch keeps the latest job listing of each namespace with one index-driven blocking
// query per namespace, at most one listing per tick. Decoding Nomad's list of 10 000
// revisions with meta costs ~250 ms of CPU, so a quiet cluster must not pay it every tick;
// a busy one pays it at most once a tick.
type jobWatch struct {
	mu      sync.Mutex
	byNS    map[string][]*nomadapi.JobListStub
	pending int           // namespaces not listed yet
	ready   chan struct{} // closed once every namespace was listed
}

func (s *Scaler) startJobWatch(ctx context.Context) *jobWatch {
	w := &jobWatch{byNS: map[string][]*nomadapi.JobListStub{}, pending: len(s.cfg.Namespaces), ready: make(chan struct{})}
	for _, ns := range s.cfg.Namespaces {
		go s.watchNamespace(ctx, w, ns)
	}
	return w
}

func (s *Scaler) watchNamespace(ctx context.Context, w *jobWatch, ns string) {
	var index uint64
	backoff := 500 * time.Millisecond
	failing := false
	for ctx.Err() == nil {
		start := s.clock.Now()
		stubs, next, err := s.jobs.List(ctx, ns, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				s.log.Warn("listing revision jobs failed; holding counts until Nomad answers", zap.String("namespace", ns), zap.Error(err))
				failing = true
			}
			s.sleep(ctx, backoff)
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		if failing {
			s.log.Info("listing revision jobs works again", zap.String("namespace", ns))
			failing = false
		}
		backoff = 500 * time.Millisecond
		if next < index {
			next = 0 // Nomad's index went back (a restored snapshot): start over
		}
		w.publish(ns, stubs)
		index = next
		if d := s.cfg.Tick - s.clock.Now().Sub(start); d > 0 {
			s.sleep(ctx, d)
		}
	}
}

func (w *jobWatch) publish(ns string, stubs []*nomadapi.JobListStub) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.byNS[ns]; !ok {
		w.pending--
		if w.pending == 0 {
			close(w.ready)
		}
	}
	w.byNS[ns] = stubs
}

// jobs returns the latest listing of every namespace, waiting for the first one.
func (w *jobWatch) jobs(ctx context.Context) ([]*nomadapi.JobListStub, bool) {
	select {
	case <-w.ready:
	case <-ctx.Done():
		return nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var all []*nomadapi.JobListStub
	for _, stubs := range w.byNS {
		all = append(all, stubs...)
	}
	return all, true
}
