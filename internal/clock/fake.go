package clock

import (
	"sync"
	"time"
)

// Fake is a clock that moves only when a test calls Step. Its timers and tickers fire
// from Step, never on their own, so code under test waits exactly as long as the test
// says and a test can tell when that code is waiting (Waiters).
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeWaiter
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock at t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires once when Step reaches its deadline (at once for
// d ≤ 0, as time.NewTimer does).
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{f: f, c: make(chan time.Time, 1), at: f.now.Add(d)}
	if d <= 0 {
		w.c <- f.now
		w.stopped = true
		return fakeTimer{w}
	}
	f.waiters = append(f.waiters, w)
	return fakeTimer{w}
}

// NewTicker returns a ticker that fires each time Step passes another period d. Like a
// time.Ticker, it drops ticks a slow reader did not take.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{f: f, c: make(chan time.Time, 1), at: f.now.Add(d), period: d}
	f.waiters = append(f.waiters, w)
	return fakeTicker{w}
}

// Waiters is the number of armed timers and running tickers: a test waits until the
// code under test has armed one before it steps time past it.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// Step moves time forward by d and fires the timers and tickers that became due.
func (f *Fake) Step(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if w.at.After(f.now) {
			kept = append(kept, w)
			continue
		}
		select {
		case w.c <- f.now:
		default: // a ticker whose last tick was not taken yet
		}
		if w.period == 0 {
			w.stopped = true
			continue
		}
		for !w.at.After(f.now) {
			w.at = w.at.Add(w.period)
		}
		kept = append(kept, w)
	}
	clear(f.waiters[len(kept):])
	f.waiters = kept
}

// fakeWaiter is one timer (period 0) or ticker.
type fakeWaiter struct {
	f       *Fake
	c       chan time.Time
	at      time.Time
	period  time.Duration
	stopped bool // fired (a timer) or stopped; guarded by f.mu
}

// stop disarms w and reports whether it was armed.
func (w *fakeWaiter) stop() bool {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.stopped {
		return false
	}
	w.stopped = true
	for i, x := range w.f.waiters {
		if x == w {
			w.f.waiters = append(w.f.waiters[:i], w.f.waiters[i+1:]...)
			break
		}
	}
	return true
}

type fakeTimer struct{ w *fakeWaiter }

func (t fakeTimer) C() <-chan time.Time { return t.w.c }
func (t fakeTimer) Stop() bool          { return t.w.stop() }

type fakeTicker struct{ w *fakeWaiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.c }
func (t fakeTicker) Stop()               { t.w.stop() }
