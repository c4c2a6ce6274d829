package scaler

import (
	"context"
	"sync/atomic"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
)

// Nomad answers 429 to a client address with more than limits.http_max_conns_per_client
// (default 100) connections open. Waking 100 revisions at once used to open one Jobs.Scale
// and then one blocking allocation query per revision: measured, a third of the scales
// and the job listing failed with 429 and those revisions waited for ticks (make
// bench-wake). nomadConns keeps the scaler's requests in flight under a budget instead.

// contendedAllocWait is the wait of a blocking allocation query while other revisions'
// watches wait for a slot: short, so the slots go round.
const contendedAllocWait = time.Second

// nomadConns bounds the scaler's requests in flight to Nomad: calls counts every request;
// the allocation watches (long blocking queries, one per waking revision) take a slot of
// watches too, at most half of calls, so scales always have room.
type nomadConns struct {
	calls   chan struct{}
	watches chan struct{}
	waiting atomic.Int64 // watches waiting for a slot
}

func newNomadConns(n int) *nomadConns {
	return &nomadConns{calls: make(chan struct{}, n), watches: make(chan struct{}, max(1, n/2))}
}

func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do runs one request inside the budget.
func (c *nomadConns) do(ctx context.Context, f func() error) error {
	if err := acquire(ctx, c.calls); err != nil {
		return err
	}
	defer func() { <-c.calls }()
	return f()
}

// allocations is a's Allocations inside the budget: a blocking query waits allocWait
// unless other watches wait for a slot.
func (c *nomadConns) allocations(ctx context.Context, a allocsAPI, job jobKey, index uint64) ([]*nomadapi.AllocationListStub, uint64, error) {
	wait := allocWait
	if index > 0 {
		c.waiting.Add(1)
		err := acquire(ctx, c.watches)
		c.waiting.Add(-1)
		if err != nil {
			return nil, 0, err
		}
		defer func() { <-c.watches }()
		if c.waiting.Load() > 0 {
			wait = contendedAllocWait
		}
	}
	var allocs []*nomadapi.AllocationListStub
	var next uint64
	err := c.do(ctx, func() (err error) {
		allocs, next, err = a.Allocations(ctx, job, index, wait)
		return err
	})
	return allocs, next, err
}

// gatedJobs is jobsAPI inside a budget.
type gatedJobs struct {
	jobs jobsAPI
	c    *nomadConns
}

var _ jobsAPI = gatedJobs{}

func (g gatedJobs) List(ctx context.Context, ns string, waitIndex uint64) (stubs []*nomadapi.JobListStub, idx uint64, err error) {
	err = g.c.do(ctx, func() error { stubs, idx, err = g.jobs.List(ctx, ns, waitIndex); return err })
	return stubs, idx, err
}

func (g gatedJobs) Count(ctx context.Context, job jobKey) (n int, idx uint64, err error) {
	err = g.c.do(ctx, func() error { n, idx, err = g.jobs.Count(ctx, job); return err })
	return n, idx, err
}

func (g gatedJobs) Job(ctx context.Context, job jobKey) (stub *nomadapi.JobListStub, n int, err error) {
	err = g.c.do(ctx, func() error { stub, n, err = g.jobs.Job(ctx, job); return err })
	return stub, n, err
}

func (g gatedJobs) Scale(ctx context.Context, job jobKey, count int, message string, meta map[string]any) (idx uint64, err error) {
	err = g.c.do(ctx, func() error { idx, err = g.jobs.Scale(ctx, job, count, message, meta); return err })
	return idx, err
}
