// Package poll is the tests' one way to wait for something that happens on its own time
// (an agent, a process, another goroutine): ask until it holds, with a deadline, never a
// bare sleep.
package poll

import (
	"errors"
	"testing"
	"time"
)

// Bounds of the wait between two asks: short at first, so a quick change is seen (and
// timed) within milliseconds, longer later, so a slow one does not flood the agents asked.
const (
	firstWait = 10 * time.Millisecond
	maxWait   = 100 * time.Millisecond
)

// Until calls cond until it returns nil and returns how long that took. Once within has
// passed it fails t, naming what it waited for and cond's last error: say in that error
// what was seen, so that a failure shows how far things got.
func Until(t testing.TB, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	wait := firstWait
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("timed out after %s waiting for %s; last: %v", within, what, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, maxWait)
	}
}

// True is cond for Until when there is nothing to say but yes or no.
func True(ok func() bool) func() error {
	return func() error {
		if !ok() {
			return errors.New("not yet")
		}
		return nil
	}
}
