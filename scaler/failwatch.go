package scaler

import (
	"context"
	"fmt"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/internal/watchloop"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// Failed wakes. The gateway sees only Consul, the scaler sees Nomad: so while a revision
// wakes with nothing ready — the scaler raised its count, or a gateway holds requests for
// it — the leader follows its allocations with a blocking query (one per waking revision,
// ended once an instance is ready and nobody waits, or the count is back at zero). When
// every allocation of the wake has failed and none is starting (assessAllocs), it reads
// the reason (the task's first stderr line and exit code, else Nomad's task event),
// publishes a store.Failure in Consul KV, which every gateway reads with its route watch
// and answers the held requests with at once, sets the count to 0 (Nomad stops
// rescheduling), and keeps it there until the backoff passes (failBackoff). The record
// goes when an instance becomes ready (a gateway reports it) or the job goes.

// allocsAPI is the part of Nomad the failure watch uses.
type allocsAPI interface {
	// Allocations lists a job's allocations and the answer's index; with waitIndex > 0 it
	// is a blocking query that answers once the index passes waitIndex, or after wait.
	Allocations(ctx context.Context, job jobKey, waitIndex uint64, wait time.Duration) ([]*nomadapi.AllocationListStub, uint64, error)
	// StderrHead returns up to max bytes from the start of the app task's stderr in alloc.
	StderrHead(ctx context.Context, job jobKey, alloc *nomadapi.AllocationListStub, max int) ([]byte, error)
}

// failureStore keeps the failure records the gateways read.
type failureStore interface {
	PutFailure(ctx context.Context, f store.Failure) error
	DeleteFailure(ctx context.Context, ns, rev string) error
	ListFailures(ctx context.Context) ([]store.Failure, error)
}

var (
	_ allocsAPI    = nomadJobs{}
	_ failureStore = (*store.Store)(nil)
)

// allocWait bounds one blocking allocation query; Nomad answers earlier on any change.
const allocWait = 30 * time.Second

func (n nomadJobs) Allocations(ctx context.Context, job jobKey, waitIndex uint64, wait time.Duration) ([]*nomadapi.AllocationListStub, uint64, error) {
	q := (&nomadapi.QueryOptions{Namespace: job.ns, WaitIndex: waitIndex, WaitTime: wait}).WithContext(ctx)
	stubs, qm, err := n.c.Jobs().Allocations(job.id, false, q)
	if err != nil {
		return nil, 0, fmt.Errorf("list allocations of %s: %w", job.id, err)
	}
	return stubs, qm.LastIndex, nil
}

func (n nomadJobs) StderrHead(ctx context.Context, job jobKey, a *nomadapi.AllocationListStub, max int) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	alloc := &nomadapi.Allocation{ID: a.ID, Namespace: job.ns, NodeID: a.NodeID}
	q := (&nomadapi.QueryOptions{Namespace: job.ns}).WithContext(ctx)
	frames, errc := n.c.AllocFS().Logs(alloc, false, revmeta.Task, "stderr", nomadapi.OriginStart, 0, ctx.Done(), q)
	var buf []byte
	for len(buf) < max {
		select {
		case f, ok := <-frames:
			if !ok {
				return buf, nil
			}
			if f != nil {
				buf = append(buf, f.Data...)
			}
		case err := <-errc:
			if err != nil {
				return buf, err
			}
		case <-ctx.Done():
			return buf, ctx.Err()
		}
	}
	return buf[:max], nil
}

// allocWatch is one revision's running allocation watch.
type allocWatch struct{ stop context.CancelFunc }

// inBackoff reports whether r failed and its backoff has not passed.
func (r *revision) inBackoff(now time.Time) bool {
	return r.failure != nil && now.Before(r.failedUntil)
}

// watchLocked starts following r's allocations unless that runs already (s.mu held).
func (s *Scaler) watchLocked(r *revision) {
	if s.allocs == nil || r.watch != nil || r.want == 0 || s.table == nil || s.leadCtx == nil || s.leadCtx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(s.leadCtx)
	w := &allocWatch{stop: cancel}
	r.watch = w
	go s.watchAllocs(ctx, r, w)
}

// stopWatchLocked ends r's allocation watch, if any (s.mu held).
func stopWatchLocked(r *revision) {
	if r.watch != nil {
		r.watch.stop()
		r.watch = nil
	}
}

// watchAllocs follows r's allocations until its context ends (stopWatchLocked, the
// leadership) or it has handled a failure.
func (s *Scaler) watchAllocs(ctx context.Context, r *revision, w *allocWatch) {
	defer func() {
		w.stop()
		s.mu.Lock()
		if r.watch == w {
			r.watch = nil
		}
		s.mu.Unlock()
	}()
	watchloop.Run(ctx, watchloop.Config{
		Clock: s.clock, Backoff: watchloop.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second},
		OnError: func(err error, failures int, _ time.Duration) {
			if failures == 1 {
				s.log.Warn("following a waking revision's allocations failed; retrying", zap.String("job", r.job.id), zap.Error(err))
			}
		},
	}, func(ctx context.Context, index uint64) (uint64, error) {
		allocs, next, err := s.conns.allocations(ctx, s.allocs, r.job, index)
		if err != nil {
			if scaleErrorKind(err) == "job_gone" {
				w.stop()
				return 0, nil
			}
			return 0, err
		}
		now := s.clock.Now()
		s.mu.Lock()
		var failed *nomadapi.AllocationListStub
		switch {
		case s.table == nil || s.table.byJob[r.job] != r:
			w.stop() // leadership lost, or the job went
		case r.want == 0 || r.want != r.nomad || r.scalingUp || r.inBackoff(now):
			// Nothing to wake, or a count not applied yet: the allocations are not those of
			// the count (wakeIndex moves when it is).
		default:
			if v := assessAllocs(allocs, r.wakeIndex); !v.alive {
				failed = v.failed
			}
		}
		s.mu.Unlock()
		if failed != nil {
			s.revisionFailed(ctx, r, failed)
			w.stop()
		}
		return next, nil
	})
}

// revisionFailed handles a wake whose allocations all failed, newest a: it publishes
// why, takes the count to 0 and starts the backoff.
func (s *Scaler) revisionFailed(ctx context.Context, r *revision, a *nomadapi.AllocationListStub) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	var head []byte
	err := s.conns.do(rctx, func() (err error) { head, err = s.allocs.StderrHead(rctx, r.job, a, stderrHead); return err })
	cancel()
	if err != nil {
		s.log.Debug("could not read the failed task's stderr", zap.String("job", r.job.id), zap.String("alloc", a.ID), zap.Error(err))
	}
	reason := failureReason(firstLine(head), a)

	now := s.clock.Now()
	s.mu.Lock()
	if s.table == nil || s.table.byJob[r.job] != r || r.inBackoff(now) {
		s.mu.Unlock()
		return
	}
	r.attempts++
	back := failBackoff(r.attempts)
	f := store.Failure{Namespace: r.key.ns, Revision: r.key.rev, SpecHash: r.specHash, Reason: reason,
		At: now, RetryAt: now.Add(back), RetryAfter: int((back + time.Second - 1) / time.Second),
		Attempt: r.attempts, JobCreateIndex: r.created}
	r.failure, r.failedUntil = &f, f.RetryAt
	r.want = 0
	r.last = kpa.Decision{Reason: kpa.Failed, Stable: r.last.Stable, PanicValue: r.last.PanicValue}
	held := r.held
	s.mu.Unlock()

	s.metrics.failures.Inc()
	s.log.Warn("revision failed to start: every allocation failed; answering its requests 503 and holding it at zero until the backoff passes",
		zap.String("revision", r.key.String()), zap.String("reason", reason), zap.String("alloc", a.ID),
		zap.Int("attempt", f.Attempt), zap.Duration("backoff", back), zap.Int64("held", held))
	if s.fails != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.fails.PutFailure(pctx, f); err != nil {
			s.log.Error("could not publish the revision's failure; its held requests wait for the activation timeout",
				zap.String("revision", r.key.String()), zap.Error(err))
		}
		cancel()
	}
	s.apply(ctx, r) // to 0: Nomad stops rescheduling it
}

// failureTick is the tick's part (s.mu held, after observe): it adopts the records a
// previous leader left, forgets failures of revisions an instance of which is ready now,
// ends the watches nobody needs and starts one for each revision holding requests with
// nothing ready. It returns the records to delete.
func (s *Scaler) failureTick(now time.Time) (del []revKey) {
	t := s.table
	if t.stored != nil {
		for k, f := range t.stored {
			if r := t.byRev[k]; r == nil || !adoptFailure(r, f) {
				del = append(del, k)
			}
		}
		t.stored = nil
	}
	for _, r := range t.dropped {
		stopWatchLocked(r)
		if r.failure != nil {
			del = append(del, r.key)
		}
	}
	t.dropped = nil
	for _, r := range t.byJob {
		if r.gwReady > 0 {
			if r.failure != nil {
				s.log.Info("failed revision is ready again", zap.String("revision", r.key.String()), zap.Int("after_attempts", r.attempts))
				del = append(del, r.key)
			}
			r.failure, r.failedUntil, r.attempts = nil, time.Time{}, 0
		}
		switch {
		case r.watch != nil && r.held == 0 && (r.gwReady > 0 || (r.want == 0 && r.nomad == 0)):
			stopWatchLocked(r) // woke, or back at zero: nothing to follow
		case r.held > 0 && r.gwReady == 0 && r.countIndex != 0 && !r.inBackoff(now):
			s.watchLocked(r)
		}
	}
	return del
}

// adoptFailure gives r the record a previous leader left for it, unless the record is of
// an earlier job of the same name (then it reports false: the record is stale).
func adoptFailure(r *revision, f store.Failure) bool {
	if f.JobCreateIndex != 0 && f.JobCreateIndex != r.created {
		return false
	}
	r.failure, r.failedUntil, r.attempts = &f, f.RetryAt, f.Attempt
	return true
}

// deleteFailures removes failure records (best effort: a leftover is ignored once its
// RetryAt passed, and the next leader deletes it).
func (s *Scaler) deleteFailures(ctx context.Context, keys []revKey) {
	if s.fails == nil {
		return
	}
	for _, k := range keys {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.fails.DeleteFailure(dctx, k.ns, k.rev); err != nil {
			s.log.Warn("could not delete a failure record", zap.String("revision", k.String()), zap.Error(err))
		}
		cancel()
	}
}

// loadFailures reads the records a previous leader left, for the first tick to adopt.
func (s *Scaler) loadFailures(ctx context.Context) map[revKey]store.Failure {
	if s.fails == nil {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fs, err := s.fails.ListFailures(lctx)
	if err != nil {
		s.log.Warn("could not read failure records; a revision that failed under the previous leader may be woken before its backoff passed", zap.Error(err))
		return nil
	}
	out := make(map[revKey]store.Failure, len(fs))
	for _, f := range fs {
		out[revKey{f.Namespace, f.Revision}] = f
	}
	return out
}
