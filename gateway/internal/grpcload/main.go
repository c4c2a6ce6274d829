// grpcload is the gateway benchmark's gRPC load generator (`GRPC=1 make bench-gateway`):
// a closed loop of unary PingService/Ping calls (examples/grpc) over -conns HTTP/2
// connections (one grpc.ClientConn each, h2c with prior knowledge), with -streams calls in
// flight in total, spread round-robin over the connections: each of the -streams workers
// sends its next call as soon as its last one is answered.
//
// After -warmup (calls run, nothing is recorded) it measures for -duration and prints one
// line of key=value pairs:
//
//	rps=<calls answered OK per second> p50_ms=<> p99_ms=<> errors=<calls answered with a
//	non-OK status> calls=<OK calls measured> total=<calls completed over the whole run,
//	warmup and the calls in flight at the end included> seconds=<measured>
//
// Latency is that of the OK calls, from the call's start to its answer. total is the
// divisor for a proxy's CPU time read over the process's whole life. -once makes one call,
// prints its answer and exits 1 if it failed (the benchmark's setup check).
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rouse-run/rouse/examples/grpc/pingpb"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "host:port to dial")
	authority := flag.String("authority", "", "the :authority of every call (rouse routes by it); empty = -addr")
	conns := flag.Int("conns", 1, "HTTP/2 connections (grpc.ClientConns)")
	streams := flag.Int("streams", 1, "calls in flight in total, spread round-robin over -conns")
	duration := flag.Duration("duration", 5*time.Second, "how long to measure")
	warmup := flag.Duration("warmup", time.Second, "how long to run before measuring")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	msg := flag.String("msg", "bench", "the message each Ping sends")
	once := flag.Bool("once", false, "make one call, print the answer, exit 1 if it failed")
	flag.Parse()
	if *conns < 1 || *streams < 1 || *duration <= 0 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "grpcload: -conns and -streams ≥ 1, -duration > 0, -warmup ≥ 0")
		os.Exit(2)
	}

	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if *authority != "" {
		opts = append(opts, grpc.WithAuthority(*authority))
	}
	clients := make([]*pingpb.Client, *conns)
	for i := range clients {
		// passthrough: dial -addr as it is, no name resolution; each ClientConn is its own
		// HTTP/2 connection.
		cc, err := grpc.NewClient("passthrough:///"+*addr, opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcload:", err)
			os.Exit(1)
		}
		defer cc.Close()
		cc.Connect()
		clients[i] = pingpb.NewClient(cc)
	}
	req := wrapperspb.String(*msg) // read only by the calls: shared

	if *once {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		var hdr metadata.MD
		out, err := clients[0].Ping(ctx, req, grpc.Header(&hdr))
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcload:", err)
			os.Exit(1)
		}
		fmt.Printf("%s (x-revision %q)\n", out.GetValue(), strings.Join(hdr.Get("x-revision"), ","))
		return
	}

	// phase: 0 warming up, 1 measuring, 2 done. A call is counted in the phase it ends in.
	var phase atomic.Int32
	var total atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		lat    []time.Duration
		errors int64
		first  error
	}
	results := make([]result, *streams)
	var wg sync.WaitGroup
	for w := range *streams {
		wg.Add(1)
		go func(c *pingpb.Client, r *result) {
			defer wg.Done()
			r.lat = make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, *timeout)
				t0 := time.Now()
				_, err := c.Ping(cctx, req)
				d := time.Since(t0)
				ccancel()
				total.Add(1)
				if phase.Load() != 1 {
					continue
				}
				if err != nil {
					if r.errors++; r.first == nil {
						r.first = err
					}
					continue
				}
				r.lat = append(r.lat, d)
			}
		}(clients[w%*conns], &results[w])
	}
	time.Sleep(*warmup)
	start := time.Now()
	phase.Store(1)
	time.Sleep(*duration)
	phase.Store(2)
	secs := time.Since(start).Seconds()
	cancel()
	wg.Wait()

	var lat []time.Duration
	var errs int64
	var first error
	for i := range results {
		lat = append(lat, results[i].lat...)
		errs += results[i].errors
		if first == nil {
			first = results[i].first
		}
	}
	if first != nil {
		fmt.Fprintf(os.Stderr, "grpcload: %d errors, one of them: %s: %v\n", errs, status.Code(first), status.Convert(first).Message())
	}
	slices.Sort(lat)
	fmt.Printf("rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d calls=%d total=%d seconds=%.3f\n",
		float64(len(lat))/secs, ms(quantile(lat, 0.50)), ms(quantile(lat, 0.99)), errs, len(lat), total.Load(), secs)
}

// quantile is the q-quantile of sorted (nearest rank), 0 for none.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
