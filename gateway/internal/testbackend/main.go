// testbackend is the workload the gateway's integration tests and benchmark run on Nomad:
// an ordinary net/http app with endpoints that sleep, count and echo bodies, report their
// concurrency and the headers they received, and speak WebSocket.
//
// Env: PORT (listen port), ROUSE_REVISION (echoed in X-Revision), START_DELAY (sleep
// before listening, to make cold starts slower), READY_DELAY (answer /healthz 503 that
// long after listening).
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	rev := os.Getenv("ROUSE_REVISION")
	if d, err := time.ParseDuration(os.Getenv("START_DELAY")); err == nil {
		time.Sleep(d)
	}
	readyAt := time.Now()
	if d, err := time.ParseDuration(os.Getenv("READY_DELAY")); err == nil {
		readyAt = readyAt.Add(d)
	}
	var inflight, served, maxInflight atomic.Int64
	instance := rev + "@" + port

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if time.Now().Before(readyAt) {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// / answers who served: the revision and the instance. With hold=1 a sleep runs to
	// its end even when the client goes, as a message consumer finishes its message.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for m := maxInflight.Load(); n > m && !maxInflight.CompareAndSwap(m, n); m = maxInflight.Load() {
		}
		served.Add(1)
		w.Header().Set("X-Revision", rev)
		w.Header().Set("X-Instance", instance)
		w.Header().Set("X-Inflight", strconv.FormatInt(n, 10))
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			done := r.Context().Done()
			if r.URL.Query().Get("hold") == "1" {
				done = nil
			}
			select {
			case <-time.After(d):
			case <-done:
				return
			}
		}
		fmt.Fprintf(w, "hello from %s\n", instance)
	})
	// /count reads the whole body and answers its length.
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	// /stream?size=N writes N bytes in 64 KiB chunks.
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		for size > 0 {
			n := min(size, int64(len(chunk)))
			if _, err := w.Write(chunk[:n]); err != nil {
				return
			}
			size -= n
		}
	})
	// /headers prints the request line and headers as received.
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Revision", rev)
		fmt.Fprintf(w, "%s %s %s\nHost: %s\n", r.Method, r.RequestURI, r.Proto, r.Host)
		var keys []string
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header[k], ", "))
		}
	})
	// /hop answers with hop-by-hop headers a proxy must not pass on.
	mux.HandleFunc("/hop", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "leak")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		fmt.Fprintln(w, "ok")
	})
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	// /ws echoes WebSocket messages, prefixed with the instance.
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, http.Header{"X-Revision": {rev}})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte(instance+": "), msg...)); err != nil {
				return
			}
		}
	})
	// /stats: requests begun by /, in flight now, and the most it ever had in flight at
	// once (/stats counts in none of them).
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "served=%d inflight=%d max=%d\n", served.Load(), inflight.Load(), maxInflight.Load())
	})

	// /raw/… answers the request URI exactly as received (the mux would clean it).
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.RequestURI, "/raw/") {
			io.WriteString(w, r.RequestURI)
			return
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: ":" + port, Handler: root, ReadHeaderTimeout: 10 * time.Second}
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
