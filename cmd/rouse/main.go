// Command rouse is the one rouse binary: the CLI verbs that deploy and route services
// (apply, traffic, rollback, …) and the daemons (dev, and the gateway and scaler).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Ctrl-C cancels the running verb cleanly (apply reports what it leaves behind).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
