package scaler

import "time"

// Clock is the scaler's time source, injected so tests step time instead of sleeping.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker the scaler uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// WallClock is the real clock.
type WallClock struct{}

var _ Clock = WallClock{}

// Now is time.Now.
func (WallClock) Now() time.Time { return time.Now() }

// NewTicker is time.NewTicker.
func (WallClock) NewTicker(d time.Duration) Ticker { return wallTicker{time.NewTicker(d)} }

type wallTicker struct{ t *time.Ticker }

func (w wallTicker) C() <-chan time.Time { return w.t.C }
func (w wallTicker) Stop()               { w.t.Stop() }
