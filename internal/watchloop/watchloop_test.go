package watchloop

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

func TestNextIndex(t *testing.T) {
	for _, tc := range []struct {
		prev, next uint64
		zeroBlocks bool
		want       uint64
	}{
		{0, 7, false, 7},
		{7, 9, false, 9},
		{9, 9, false, 9},
		{9, 3, false, 0}, // went backwards: start over
		{0, 0, false, 1}, // 0 would not block
		{0, 0, true, 0},  // the server blocks at 0
		{5, 0, true, 0},
	} {
		if got := NextIndex(tc.prev, tc.next, tc.zeroBlocks); got != tc.want {
			t.Errorf("NextIndex(%d, %d, %v) = %d, want %d", tc.prev, tc.next, tc.zeroBlocks, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != b.Min {
		t.Fatalf("after Reset: %v", d)
	}
}

// waitWaiters waits until the code under test has armed n timers on f.
func waitWaiters(t *testing.T, f *clock.Fake, n int) {
	t.Helper()
	poll.Until(t, 5*time.Second, fmt.Sprintf("%d timers armed", n), func() error {
		if got := f.Waiters(); got != n {
			return fmt.Errorf("%d armed", got)
		}
		return nil
	})
}

// TestRun: the loop waits on the last answer's index, backs off on the clock after a
// failure, says so once per failure and once on recovery, and stops with its context.
func TestRun(t *testing.T) {
	f := clock.NewFake(time.Unix(0, 0))
	var (
		mu       sync.Mutex
		asked    []uint64
		failures []int
		recovers int
	)
	answers := []struct {
		next uint64
		err  error
	}{{5, nil}, {0, errors.New("down")}, {0, errors.New("down")}, {8, nil}, {2, nil}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	step := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{
			Clock: f, Backoff: Backoff{Min: time.Second, Max: time.Minute},
			OnError:   func(_ error, n int, _ time.Duration) { mu.Lock(); failures = append(failures, n); mu.Unlock() },
			OnRecover: func() { mu.Lock(); recovers++; mu.Unlock() },
		}, func(ctx context.Context, idx uint64) (uint64, error) {
			mu.Lock()
			i := len(asked)
			asked = append(asked, idx)
			mu.Unlock()
			if i == len(answers) {
				step <- struct{}{}
				<-ctx.Done()
				return 0, ctx.Err()
			}
			step <- struct{}{}
			return answers[i].next, answers[i].err
		})
	}()
	<-step // 0 → 5
	<-step // fails
	waitWaiters(t, f, 1)
	f.Step(time.Second) // first backoff: Min
	<-step              // fails again
	waitWaiters(t, f, 1)
	f.Step(time.Second) // the second is 2 s: not yet
	select {
	case <-step:
		t.Fatal("retried before the backoff passed")
	default:
	}
	f.Step(time.Second)
	<-step // 8
	<-step // 2: went backwards
	<-step // so it asks at 0, and blocks until the end
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	want := []uint64{0, 5, 5, 5, 8, 0}
	if len(asked) != len(want) {
		t.Fatalf("asked at %v, want %v", asked, want)
	}
	for i := range want {
		if asked[i] != want[i] {
			t.Fatalf("asked at %v, want %v", asked, want)
		}
	}
	if len(failures) != 2 || failures[0] != 1 || failures[1] != 2 || recovers != 1 {
		t.Fatalf("failures %v, recovers %d", failures, recovers)
	}
}

// TestRunEvery: with Every, a successful fetch is followed by the rest of the interval.
func TestRunEvery(t *testing.T) {
	f := clock.NewFake(time.Unix(0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fetched := make(chan struct{}, 10)
	go Run(ctx, Config{Clock: f, Every: 2 * time.Second}, func(context.Context, uint64) (uint64, error) {
		fetched <- struct{}{}
		return 1, nil
	})
	<-fetched
	waitWaiters(t, f, 1)
	f.Step(1999 * time.Millisecond)
	select {
	case <-fetched:
		t.Fatal("fetched again within Every")
	default:
	}
	f.Step(time.Millisecond)
	<-fetched
}
