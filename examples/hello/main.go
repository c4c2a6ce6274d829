// hello answers "Hello <TARGET>!" on $PORT. It is rouse's smallest workload: the example
// `make dev` deploys and the process the integration tests run on real Nomad.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	target := os.Getenv("TARGET")
	if target == "" {
		target = "World"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	rev := os.Getenv("ROUSE_REVISION")
	logger := log.New(os.Stdout, "", log.LstdFlags) // stdout: what `rouse logs` shows
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if rev != "" {
			w.Header().Set("X-Revision", rev)
		}
		fmt.Fprintf(w, "Hello %s!\n", target)
		logger.Printf("%s %s", r.Method, r.URL.RequestURI())
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	logger.Printf("hello: listening on :%s (revision %q, TARGET=%q)", port, rev, target)
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	// Nomad signals after the shutdown_delay; finish what is in flight, then exit.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
