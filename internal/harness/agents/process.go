package agents

import (
	"context"
	"time"
)

// StartProcess starts bin as a helper process of the harness, the way the agents are
// started: output appended to logFile, its own process group, SIGTERM when we die. Other
// harness packages (the registry) start their daemons with it.
func StartProcess(name, bin, logFile string, args ...string) (*Process, error) {
	return start(name, bin, logFile, args...)
}

// WaitReady polls ok every 100 ms until it returns true, p exits (the error then carries
// the tail of its log) or timeout passes.
func WaitReady(ctx context.Context, p *Process, what string, timeout time.Duration, ok func() bool) error {
	return waitFor(ctx, p, what, timeout, ok)
}

// RetryBind calls start again, up to three times in all, while it fails with "address
// already in use": a port FreePorts gave out was taken before the process bound it.
func RetryBind[T any](start func() (T, error)) (T, error) { return retryBind(start) }
