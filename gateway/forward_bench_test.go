package gateway_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/guard"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// BenchmarkForward is one keep-alive HTTP/1.1 request through a real gateway to a minimal
// instance and back, per op: the fast path's cost (the instance's and client's are
// small and the same in every build). Tracing off, the default; compare builds with
//
//	go test -run '^$' -bench '^BenchmarkForward$' -count 10 ./gateway/
func BenchmarkForward(b *testing.B) {
	benchForward(b, nil)
}

func benchForward(b *testing.B, mod func(*gateway.Config)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go serveMinimal(ln)
	benchForwardWith(b, "bench-fwd", func(c *revmeta.Config) { c.Protocol = "" }, mod, ln.Addr().(*net.TCPAddr).Port)
}

// benchForwardWith times requests to svc's revision (configured by cfgMod) at the
// instance on port, through a gateway configured by mod.
func benchForwardWith(b *testing.B, svc string, cfgMod func(*revmeta.Config), mod func(*gateway.Config), port int) {
	g := routePorts(b, svc, cfgMod, mod, port)
	c, err := net.Dial("tcp", g.PublicAddr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /x HTTP/1.1\r\nHost: " + host(svc) + "\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 16<<10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// serveMinimal answers every request on every connection with a fixed 200 as soon as its
// head is in.
func serveMinimal(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 16<<10)
			var pending []byte
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				pending = append(pending, buf[:n]...)
				for {
					i := bytes.Index(pending, []byte("\r\n\r\n"))
					if i < 0 {
						break
					}
					pending = pending[i+4:]
					if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")); err != nil {
						return
					}
				}
			}
		}()
	}
}

// BenchmarkForwardGuarded is BenchmarkForward to a revision with a hard concurrency
// limit: through the instance's rouse guard, one more kept-alive HTTP hop on the
// instance's node (docs/architecture.md, "Concurrency across gateways"). Against
// BenchmarkForward:
//
//	go test -run '^$' -bench '^BenchmarkForward(Guarded)?$' -count 10 ./gateway/
func BenchmarkForwardGuarded(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go serveMinimal(ln)
	gd := runGuard(b, guard.Config{Upstream: ln.Addr().String(), Limit: 1000, Timeout: time.Minute})
	benchForwardWith(b, "bench-guarded", func(c *revmeta.Config) { c.Protocol, c.Concurrency = "", 1000 }, nil, gd.Addr().(*net.TCPAddr).Port)
}
