// Package balance is a revision's instance pool in the gateway: it picks the least loaded
// instance under a per-instance hard concurrency limit, and queues requests in FIFO order
// when every instance is full (queued) or when the revision has no ready instance at all
// (held, waiting for activation). The fast path is lock-free; the queue takes a mutex.
package balance

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// ErrQueueFull is returned by Acquire when the revision's queue is at its bound.
var ErrQueueFull = errors.New("queue full")

// Instance is one app instance. The pool keeps its in-flight count; B is the gateway's
// per-instance payload (its HTTP client).
type Instance[B any] struct {
	ID      string
	Backend B

	inflight atomic.Int64
	limit    atomic.Int64 // this gateway's share of the hard limit; 0 = unlimited, NoSlots = none
	down     atomic.Bool  // refused a connection: skipped until marked up again
}

// NoSlots as a limit means this gateway sends the instance nothing (another gateway owns
// all its slots).
const NoSlots = -1

// NewInstance returns an instance with no limit.
func NewInstance[B any](id string, b B) *Instance[B] { return &Instance[B]{ID: id, Backend: b} }

// InFlight is the number of requests holding a slot on the instance.
func (i *Instance[B]) InFlight() int64 { return i.inflight.Load() }

// Limit is the instance's slot count in this gateway (0 = unlimited, NoSlots = none).
func (i *Instance[B]) Limit() int64 { return i.limit.Load() }

// SetLimit changes the slot count; call Pool.Dispatch afterwards when it grew.
func (i *Instance[B]) SetLimit(n int64) { i.limit.Store(n) }

// SetDown marks the instance unusable (true) or usable again (false).
func (i *Instance[B]) SetDown(d bool) { i.down.Store(d) }

// Down reports whether SetDown(true) is in effect.
func (i *Instance[B]) Down() bool { return i.down.Load() }

func (i *Instance[B]) room() (int64, bool) {
	v := i.inflight.Load()
	if i.down.Load() {
		return v, false
	}
	if l := i.limit.Load(); l != 0 && v >= l {
		return v, false
	}
	return v, true
}

// Waiter is a request waiting for a slot. C receives the instance it got (a slot already
// taken for it) or nil when the pool gave up on it (FailAll).
type Waiter[B any] struct {
	C          <-chan *Instance[B]
	c          chan *Instance[B]
	Held       bool // the revision had no ready instance when the request arrived
	prev, next *Waiter[B]
	queued     bool
}

// Pool is one revision's instances and queue.
type Pool[B any] struct {
	set      atomic.Pointer[[]*Instance[B]]
	nwait    atomic.Int64
	inflight atomic.Int64
	// rr moves where the exact scan starts, so instances equally loaded take turns: one
	// client sending one request at a time (an HTTP/2 connection, a keep-alive loop) is
	// spread over every instance rather than pinned to the first.
	rr atomic.Uint32

	mu         sync.Mutex
	head, tail *Waiter[B]
	maxHeld    int // bound while no instance is ready; <0 = unbounded
	maxQueued  int // bound while instances are ready; <0 = unbounded
}

// NewPool returns an empty pool with the given queue bounds (<0 = unbounded).
func NewPool[B any](maxHeld, maxQueued int) *Pool[B] {
	p := &Pool[B]{maxHeld: maxHeld, maxQueued: maxQueued}
	p.set.Store(&[]*Instance[B]{})
	return p
}

// SetBounds changes the queue bounds; requests already queued stay.
func (p *Pool[B]) SetBounds(maxHeld, maxQueued int) {
	p.mu.Lock()
	p.maxHeld, p.maxQueued = maxHeld, maxQueued
	p.mu.Unlock()
}

// Instances is the current routable set (do not modify).
func (p *Pool[B]) Instances() []*Instance[B] { return *p.set.Load() }

// SetInstances replaces the routable set and hands freed capacity to waiters. An instance
// left out gets no new request; requests already on it finish and Release as usual.
func (p *Pool[B]) SetInstances(list []*Instance[B]) {
	cp := append([]*Instance[B](nil), list...)
	p.set.Store(&cp)
	p.Dispatch()
}

// Stats are the gauges: requests holding a slot, requests waiting, routable instances
// not marked down.
func (p *Pool[B]) Stats() (inFlight, waiting int64, ready int) {
	return p.inflight.Load(), p.nwait.Load(), p.up()
}

// up is the number of routable instances not marked down. An instance that refuses
// connections is down; when all are, the revision is as good as not ready: its waiting
// requests are held (bounded by maxHeld, until the activation timeout), not queued
// behind a burst capacity meant for busy instances.
func (p *Pool[B]) up() int {
	n := 0
	for _, in := range *p.set.Load() {
		if !in.Down() {
			n++
		}
	}
	return n
}

// Acquire takes a slot on the least loaded instance with room. When none has room it
// queues the request and returns a Waiter (held is then the number of requests waiting
// while the revision has no ready instance, 0 otherwise). ErrQueueFull when the queue is
// at its bound.
func (p *Pool[B]) Acquire() (inst *Instance[B], w *Waiter[B], held int, err error) {
	// Requests already waiting go first: a newcomer takes the fast path only when nobody
	// waits, so release order stays FIFO.
	if p.nwait.Load() == 0 {
		if in := p.pick(); in != nil {
			return in, nil, 0, nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == nil {
		if in := p.pick(); in != nil {
			return in, nil, 0, nil
		}
	}
	ready := p.up() > 0
	bound := p.maxQueued
	if !ready {
		bound = p.maxHeld
	}
	if bound >= 0 && p.nwait.Load() >= int64(bound) {
		return nil, nil, 0, ErrQueueFull
	}
	c := make(chan *Instance[B], 1)
	w = &Waiter[B]{C: c, c: c, Held: !ready, queued: true}
	if p.tail == nil {
		p.head, p.tail = w, w
	} else {
		w.prev, p.tail.next, p.tail = p.tail, w, w
	}
	n := p.nwait.Add(1)
	// Publishing nwait before looking for room again pairs with Release, which frees a
	// slot before reading nwait: one of the two always sees the other, so no waiter is
	// left behind a free slot.
	p.dispatchLocked()
	if !ready {
		held = int(n)
	}
	return nil, w, held, nil
}

// TryAcquire takes a slot on the least loaded instance with room, only when nobody
// waits (FIFO order stays); nil otherwise, and nothing is queued.
func (p *Pool[B]) TryAcquire() *Instance[B] {
	if p.nwait.Load() != 0 {
		return nil
	}
	return p.pick()
}

// Cancel takes w out of the queue (its deadline passed). If w was served meanwhile the
// instance it got is returned and the caller owns that slot.
func (p *Pool[B]) Cancel(w *Waiter[B]) *Instance[B] {
	p.mu.Lock()
	if w.queued {
		p.unlinkLocked(w)
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return <-w.c
}

// Release frees the slot a request held on in and serves the next waiter.
func (p *Pool[B]) Release(in *Instance[B]) {
	in.inflight.Add(-1)
	p.inflight.Add(-1)
	if p.nwait.Load() > 0 {
		p.Dispatch()
	}
}

// Dispatch serves waiters while some instance has room (after limits grew or an instance
// came back up).
func (p *Pool[B]) Dispatch() {
	p.mu.Lock()
	p.dispatchLocked()
	p.mu.Unlock()
}

// FailAll answers every waiter with nil (the revision left the route table).
func (p *Pool[B]) FailAll() {
	p.mu.Lock()
	for p.head != nil {
		w := p.head
		p.unlinkLocked(w)
		w.c <- nil
	}
	p.mu.Unlock()
}

func (p *Pool[B]) dispatchLocked() {
	for p.head != nil {
		in := p.pick()
		if in == nil {
			return
		}
		w := p.head
		p.unlinkLocked(w)
		w.c <- in
	}
}

func (p *Pool[B]) unlinkLocked(w *Waiter[B]) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		p.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		p.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	p.nwait.Add(-1)
}

// exactScan is the set size up to which pick compares every instance; above it, it uses
// the power of two random choices, falling back to a scan only when both are full.
const exactScan = 8

// pick takes a slot on the least loaded instance with room, or returns nil.
func (p *Pool[B]) pick() *Instance[B] {
	set := *p.set.Load()
	n := len(set)
	if n == 0 {
		return nil
	}
	for {
		var best *Instance[B]
		var bestV int64
		if n <= exactScan {
			off := 0
			if n > 1 {
				off = int(p.rr.Add(1) % uint32(n))
			}
			for k := range n {
				in := set[(off+k)%n]
				if v, ok := in.room(); ok && (best == nil || v < bestV) {
					best, bestV = in, v
				}
			}
		} else {
			i := rand.IntN(n)
			j := rand.IntN(n - 1)
			if j >= i {
				j++
			}
			a, b := set[i], set[j]
			va, oka := a.room()
			vb, okb := b.room()
			switch {
			case oka && (!okb || va <= vb):
				best, bestV = a, va
			case okb:
				best, bestV = b, vb
			default:
				off := rand.IntN(n)
				for k := 0; k < n; k++ {
					in := set[(off+k)%n]
					if v, ok := in.room(); ok && (best == nil || v < bestV) {
						best, bestV = in, v
					}
				}
			}
		}
		if best == nil {
			return nil
		}
		if best.inflight.CompareAndSwap(bestV, bestV+1) {
			p.inflight.Add(1)
			return best
		}
		// Another request took a slot on it meanwhile: look again.
	}
}
