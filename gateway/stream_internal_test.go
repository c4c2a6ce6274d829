package gateway

import (
	"testing"
	"time"
)

// A grpc-timeout the gateway forwards has at most 8 digits (grpc-go refuses a call with
// more: a call without a deadline to a revision with the default 300 s timeout failed),
// and reads back as at most the time it was made from.
func TestGRPCTimeoutValue(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, 99 * time.Millisecond, 300*time.Second - 11*time.Nanosecond, time.Hour, 200 * 24 * time.Hour} {
		v := grpcTimeoutValue(d)
		if len(v) > 9 {
			t.Errorf("%v → %q: more than 8 digits", d, v)
		}
		back, ok := grpcTimeout(v)
		if !ok || back > d || (d < time.Hour && d-back > d/1000) {
			t.Errorf("%v → %q → %v, %v", d, v, back, ok)
		}
	}
}
