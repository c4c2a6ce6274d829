// client calls examples/grpc's PingService — straight at an instance, or through the rouse
// gateway, which routes by the :authority it sends — and counts the replies per instance
// that answered, so per-request balancing over its one connection shows.
//
//	go run ./examples/grpc/client -authority grpc-ping.default.localhost -n 10
//	go run ./examples/grpc/client -addr 127.0.0.1:8443 -authority grpc-ping.default.localhost -insecure -stream 5
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rouse-run/rouse/examples/grpc/pingpb"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "`host:port` to connect to")
	authority := flag.String("authority", "", "the :authority to send (and the TLS server name), e.g. grpc-ping.default.localhost; default: -addr")
	useTLS := flag.Bool("tls", false, "TLS, verified against the system's roots (or -ca); without it, plain h2c")
	skipVerify := flag.Bool("insecure", false, "TLS without verifying the certificate (a self-signed dev one); implies -tls")
	caFile := flag.String("ca", "", "TLS, verified against the PEM certificates in `file`; implies -tls")
	n := flag.Int("n", 1, "number of unary Ping calls, one after another")
	streamN := flag.Int("stream", 0, "then one PingStream call asking for `N` replies")
	msg := flag.String("msg", "hello", "the message of each Ping (sleep:<ms> and fail:<code> work too)")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call (a stream gets 10 ms more per reply)")
	stats := flag.Bool("stats", false, "at the end, call Stats and print its answer")
	flag.Parse()
	log.SetFlags(0)

	creds := insecure.NewCredentials()
	if *useTLS || *skipVerify || *caFile != "" {
		cfg := &tls.Config{InsecureSkipVerify: *skipVerify} // #nosec G402 -- asked for with -insecure
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				log.Fatal(err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				log.Fatalf("%s: no PEM certificate", *caFile)
			}
		}
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if *authority != "" {
		opts = append(opts, grpc.WithAuthority(*authority))
	}
	cc, err := grpc.NewClient(*addr, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	c := pingpb.NewClient(cc)

	perInstance := map[string]int{}
	failed := 0
	for i := range *n {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		var header metadata.MD
		reply, err := c.Ping(ctx, wrapperspb.String(*msg), grpc.Header(&header))
		cancel()
		if err != nil {
			failed++
			fmt.Printf("%d: %s (instance %s)\n", i+1, describe(err), instanceOf(header))
			continue
		}
		perInstance[instanceOf(header)]++
		fmt.Printf("%d: %s\n", i+1, reply.GetValue())
	}
	if *streamN > 0 {
		got, err := stream(c, *streamN, *timeout+time.Duration(*streamN)*10*time.Millisecond, perInstance)
		if err != nil {
			failed++
			fmt.Printf("stream: %s after %d replies\n", describe(err), got)
		}
	}
	if *stats {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		reply, err := c.Stats(ctx)
		cancel()
		if err != nil {
			failed++
			fmt.Printf("stats: %s\n", describe(err))
		} else {
			fmt.Printf("stats: %s\n", reply.GetValue())
		}
	}

	fmt.Println("replies per instance:")
	names := make([]string, 0, len(perInstance))
	for name := range perInstance {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Printf("  %-20s %d\n", name, perInstance[name])
	}
	if failed > 0 {
		fmt.Printf("  %-20s %d\n", "(failed)", failed)
		os.Exit(1)
	}
}

// stream makes one PingStream call for n replies and prints them.
func stream(c *pingpb.Client, n int, timeout time.Duration, perInstance map[string]int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := c.PingStream(ctx, wrapperspb.String(fmt.Sprintf("n:%d", n)))
	if err != nil {
		return 0, err
	}
	got, instance := 0, ""
	for {
		reply, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		if got == 0 {
			header, _ := s.Header() // arrived with the first reply
			instance = instanceOf(header)
		}
		perInstance[instance]++
		got++
		fmt.Printf("stream %d: %s\n", got, reply.GetValue())
	}
}

// instanceOf is the x-instance an answer's header names.
func instanceOf(header metadata.MD) string {
	if v := header.Get("x-instance"); len(v) > 0 {
		return v[0]
	}
	return "(unknown)"
}

func describe(err error) string {
	s := status.Convert(err)
	return fmt.Sprintf("%s: %s", s.Code(), s.Message())
}
