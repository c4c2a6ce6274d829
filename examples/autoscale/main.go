// autoscale is Knative's classic autoscaling demo app on $PORT:
//
//	/?sleep=100      wait 100 ms before answering (I/O-bound load)
//	/?prime=1000000  answer the largest prime below N (CPU-bound load)
//	/?bloat=50       allocate and touch 50 MiB for the request (memory load)
//
// The parameters combine. Bad values answer 400 with the reason.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const (
	maxSleep = 10 * time.Minute
	maxPrime = 100_000_000
	maxBloat = 4096 // MiB
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", handle)
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

func handle(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	num := func(name string, max int) (int, bool) {
		s := q.Get(name)
		if s == "" {
			return 0, true
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > max {
			http.Error(w, fmt.Sprintf("%s=%q: want a whole number from 0 to %d", name, s, max), http.StatusBadRequest)
			return 0, false
		}
		return n, true
	}
	ms, ok1 := num("sleep", int(maxSleep/time.Millisecond))
	n, ok2 := num("prime", maxPrime)
	mib, ok3 := num("bloat", maxBloat)
	if !ok1 || !ok2 || !ok3 {
		return
	}
	var out []string
	if ms > 0 {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		out = append(out, fmt.Sprintf("Slept for %d milliseconds.", ms))
	}
	if n > 0 {
		out = append(out, fmt.Sprintf("The largest prime less than %d is %d.", n, largestPrimeBelow(n)))
	}
	if mib > 0 {
		b := make([]byte, mib<<20)
		for i := 0; i < len(b); i += 4096 { // touch every page so the memory is really used
			b[i] = 1
		}
		out = append(out, fmt.Sprintf("Allocated %d MiB.", mib))
	}
	if len(out) == 0 {
		out = append(out, "Try /?sleep=100, /?prime=1000000 or /?bloat=50.")
	}
	for _, l := range out {
		fmt.Fprintln(w, l)
	}
}

// largestPrimeBelow sieves [2, n) and returns the largest prime, or 0 if there is none.
func largestPrimeBelow(n int) int {
	if n <= 2 {
		return 0
	}
	composite := make([]bool, n)
	for i := 2; i*i < n; i++ {
		if !composite[i] {
			for j := i * i; j < n; j += i {
				composite[j] = true
			}
		}
	}
	for i := n - 1; i >= 2; i-- {
		if !composite[i] {
			return i
		}
	}
	return 0
}
