package clock

import (
	"context"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/harness/poll"
)

func fired(c <-chan time.Time) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestFakeTimer(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	tm := f.NewTimer(time.Second)
	if f.Waiters() != 1 {
		t.Fatalf("waiters %d", f.Waiters())
	}
	f.Step(999 * time.Millisecond)
	if fired(tm.C()) {
		t.Fatal("fired early")
	}
	f.Step(time.Millisecond)
	if !fired(tm.C()) || f.Waiters() != 0 {
		t.Fatalf("did not fire at its deadline (waiters %d)", f.Waiters())
	}
	if tm.Stop() {
		t.Fatal("Stop of a fired timer reports it armed")
	}
	stopped := f.NewTimer(time.Second)
	if !stopped.Stop() || f.Waiters() != 0 {
		t.Fatal("Stop did not disarm")
	}
	f.Step(time.Hour)
	if fired(stopped.C()) {
		t.Fatal("a stopped timer fired")
	}
	if now := f.NewTimer(0); !fired(now.C()) {
		t.Fatal("a zero timer must fire at once")
	}
}

func TestFakeTicker(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	tk := f.NewTicker(time.Second)
	for i := range 3 {
		f.Step(time.Second)
		if !fired(tk.C()) {
			t.Fatalf("tick %d missing", i)
		}
	}
	// A reader that falls behind gets one tick, not a backlog (as with time.Ticker).
	f.Step(5 * time.Second)
	if !fired(tk.C()) || fired(tk.C()) {
		t.Fatal("want exactly one pending tick after a long step")
	}
	f.Step(500 * time.Millisecond)
	if fired(tk.C()) {
		t.Fatal("ticked between periods")
	}
	tk.Stop()
	f.Step(time.Hour)
	if fired(tk.C()) || f.Waiters() != 0 {
		t.Fatal("a stopped ticker ticked")
	}
}

func TestSleep(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	done := make(chan bool)
	go func() { done <- Sleep(context.Background(), f, time.Minute) }()
	// The goroutine arms its timer on its own time.
	poll.Until(t, 5*time.Second, "Sleep's timer armed", poll.True(func() bool { return f.Waiters() == 1 }))
	f.Step(time.Minute)
	if !<-done {
		t.Fatal("Sleep reported an interruption")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, f, time.Minute) {
		t.Fatal("Sleep on an ended context reported the whole wait")
	}
}
