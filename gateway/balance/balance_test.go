package balance

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func instances(n int, limit int64) []*Instance[int] {
	out := make([]*Instance[int], n)
	for i := range out {
		out[i] = NewInstance(fmt.Sprint("i", i), i)
		out[i].SetLimit(limit)
	}
	return out
}

func TestLeastLoaded(t *testing.T) {
	p := NewPool[int](10, 10)
	ins := instances(3, 0)
	p.SetInstances(ins)
	seen := map[int]int{}
	for k := 0; k < 9; k++ {
		in, w, _, err := p.Acquire()
		if err != nil || w != nil || in == nil {
			t.Fatalf("acquire %d: %v %v %v", k, in, w, err)
		}
		seen[in.Backend]++
	}
	for i := 0; i < 3; i++ {
		if seen[i] != 3 {
			t.Fatalf("spread %v, want 3 each", seen)
		}
	}
	p.Release(ins[1])
	if in, _, _, _ := p.Acquire(); in != ins[1] {
		t.Fatalf("least loaded is i1, got %s", in.ID)
	}
}

func TestLimitQueueFIFO(t *testing.T) {
	p := NewPool[int](0, 3)
	ins := instances(1, 1)
	p.SetInstances(ins)
	first, _, _, _ := p.Acquire()
	if first == nil {
		t.Fatal("first acquire must get the free slot")
	}
	var ws []*Waiter[int]
	for k := 0; k < 3; k++ {
		in, w, held, err := p.Acquire()
		if in != nil || w == nil || err != nil || held != 0 || w.Held {
			t.Fatalf("acquire %d: in=%v w=%v held=%d err=%v", k, in, w, held, err)
		}
		ws = append(ws, w)
	}
	if _, _, _, err := p.Acquire(); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("4th waiter: err=%v, want ErrQueueFull", err)
	}
	if inf, waiting, ready := p.Stats(); inf != 1 || waiting != 3 || ready != 1 {
		t.Fatalf("stats %d %d %d", inf, waiting, ready)
	}
	// Each release serves exactly the oldest waiter.
	for k, w := range ws {
		p.Release(ins[0])
		select {
		case in := <-w.C:
			if in != ins[0] {
				t.Fatal("wrong instance")
			}
		default:
			t.Fatalf("waiter %d not served after release", k)
		}
		for _, later := range ws[k+1:] {
			if len(later.C) != 0 {
				t.Fatal("served out of order")
			}
		}
	}
	if ins[0].InFlight() != 1 {
		t.Fatalf("in flight %d", ins[0].InFlight())
	}
}

func TestHeldUntilInstances(t *testing.T) {
	p := NewPool[int](2, 0)
	_, w1, held1, _ := p.Acquire()
	_, w2, held2, _ := p.Acquire()
	if w1 == nil || !w1.Held || held1 != 1 || held2 != 2 {
		t.Fatalf("held counts %d %d", held1, held2)
	}
	if _, _, _, err := p.Acquire(); !errors.Is(err, ErrQueueFull) {
		t.Fatal("held bound not enforced")
	}
	p.SetInstances(instances(1, 0))
	for _, w := range []*Waiter[int]{w1, w2} {
		select {
		case in := <-w.C:
			if in == nil {
				t.Fatal("nil instance")
			}
		default:
			t.Fatal("held waiter not released by SetInstances")
		}
	}
	// maxQueued 0: with instances ready and full, never queue.
	p2 := NewPool[int](5, 0)
	p2.SetInstances(instances(1, 1))
	p2.Acquire()
	if _, _, _, err := p2.Acquire(); !errors.Is(err, ErrQueueFull) {
		t.Fatal("burst capacity 0 must not queue")
	}
}

func TestCancel(t *testing.T) {
	p := NewPool[int](5, 5)
	_, w, _, _ := p.Acquire()
	if p.Cancel(w) != nil {
		t.Fatal("cancel of a queued waiter returns nil")
	}
	if _, waiting, _ := p.Stats(); waiting != 0 {
		t.Fatal("cancel left the waiter counted")
	}
	_, w, _, _ = p.Acquire()
	p.SetInstances(instances(1, 0)) // serves w
	if in := p.Cancel(w); in == nil {
		t.Fatal("cancel after service must hand over the slot")
	}
	p.SetInstances(nil)
	_, w, _, _ = p.Acquire()
	p.FailAll()
	if in := <-w.C; in != nil {
		t.Fatal("FailAll must answer nil")
	}
}

func TestDownSkipped(t *testing.T) {
	p := NewPool[int](5, 5)
	ins := instances(2, 0)
	p.SetInstances(ins)
	ins[0].SetDown(true)
	for k := 0; k < 5; k++ {
		if in, _, _, _ := p.Acquire(); in != ins[1] {
			t.Fatal("down instance picked")
		}
	}
	// Every instance down (they refuse connections: the node is lost, Consul has not
	// said so yet) is as good as none ready: requests are held, bounded by maxHeld, not
	// queued behind the burst capacity (here 0: queued would be refused at once).
	p = NewPool[int](3, 0)
	p.SetInstances(ins)
	ins[1].SetDown(true)
	var ws []*Waiter[int]
	for k := 1; k <= 3; k++ {
		_, w, held, err := p.Acquire()
		if err != nil || w == nil || !w.Held || held != k {
			t.Fatalf("request %d with every instance down: waiter %v, held %d, %v; want held %d", k, w, held, err, k)
		}
		ws = append(ws, w)
	}
	if _, _, _, err := p.Acquire(); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("past maxHeld with every instance down: %v, want ErrQueueFull", err)
	}
	if _, waiting, ready := p.Stats(); waiting != 3 || ready != 0 {
		t.Fatalf("Stats with every instance down: %d waiting, %d ready; want 3, 0", waiting, ready)
	}
	ins[0].SetDown(false)
	p.Dispatch()
	if in := <-ws[0].C; in != ins[0] {
		t.Fatal("up again must serve the held requests")
	}
}

func TestPowerOfTwoSpread(t *testing.T) {
	p := NewPool[int](0, 0)
	ins := instances(20, 0)
	p.SetInstances(ins)
	for k := 0; k < 2000; k++ {
		p.Acquire()
	}
	for _, in := range ins {
		if v := in.InFlight(); v < 90 || v > 110 {
			t.Fatalf("%s has %d in flight, want ≈100", in.ID, v)
		}
	}
}

// Many goroutines through a limited pool: the limit is never exceeded, every request is
// served, and nothing is left queued.
func TestConcurrentLimit(t *testing.T) {
	for _, n := range []int{1, 3, 12} {
		t.Run(fmt.Sprint(n, "instances"), func(t *testing.T) {
			p := NewPool[int](-1, -1)
			ins := instances(n, 2)
			p.SetInstances(ins)
			var over atomic.Int64
			var wg sync.WaitGroup
			for g := 0; g < 16; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; k < 300; k++ {
						in, w, _, err := p.Acquire()
						if err != nil {
							t.Error(err)
							return
						}
						if in == nil {
							select {
							case in = <-w.C:
							case <-time.After(10 * time.Second):
								t.Error("waiter starved")
								return
							}
						}
						if in.InFlight() > 2 {
							over.Add(1)
						}
						p.Release(in)
					}
				}()
			}
			wg.Wait()
			if over.Load() != 0 {
				t.Fatalf("limit exceeded %d times", over.Load())
			}
			if inf, waiting, _ := p.Stats(); inf != 0 || waiting != 0 {
				t.Fatalf("left %d in flight, %d waiting", inf, waiting)
			}
		})
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	for _, limit := range []int64{0, 100} {
		b.Run(fmt.Sprint("limit", limit), func(b *testing.B) {
			p := NewPool[int](-1, -1)
			p.SetInstances(instances(4, limit))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					in, w, _, _ := p.Acquire()
					if in == nil {
						in = <-w.C
					}
					p.Release(in)
				}
			})
		})
	}
}
