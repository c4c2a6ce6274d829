package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rouse-run/rouse/examples/grpc/pingpb"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// gRPC through a real gateway to real instances of examples/grpc (grpc-go's own h2c
// server, run as processes on loopback ports and registered in the package's Consul).

// startPing runs examples/grpc on a free loopback port as instance name; it is stopped
// (by its PID) when the test ends.
func startPing(t *testing.T, name string) int {
	t.Helper()
	bin, err := cluster.GoBuild("./examples/grpc")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "ROUSE_INSTANCE="+name)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("grpc-ping %s did not listen: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pingClient is a gRPC client of the gateway for host svc's (h2c, or TLS when pki is set).
func pingClient(t *testing.T, g *gateway.Gateway, svc string, pki *testPKI) *pingpb.Client {
	t.Helper()
	creds := insecure.NewCredentials()
	if pki != nil {
		creds = credentials.NewTLS(&tls.Config{RootCAs: pki.pool, ServerName: host(svc)})
	}
	cc, err := grpc.NewClient("passthrough:///"+g.PublicAddr(), grpc.WithTransportCredentials(creds), grpc.WithAuthority(host(svc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pingpb.NewClient(cc)
}

func sv(s string) *wrapperspb.StringValue { return wrapperspb.String(s) }

// Every kind of call passes with its metadata: unary with header and trailer, server
// streaming, client streaming, bidirectional; deadlines and cancellation reach the
// instance. Over h2c and over TLS.
func TestGRPCThroughGateway(t *testing.T) {
	port := startPing(t, "p0")
	for _, m := range h2Modes(t) {
		t.Run(m.name, func(t *testing.T) {
			svc := "grpc-" + m.name
			mod := func(*gateway.Config) {}
			if m.pki != nil {
				mod = m.pki.withTLS(false)
			}
			// The default timeout (300 s): a call without a deadline is forwarded with the
			// revision's, which must be a grpc-timeout grpc-go accepts (8 digits at most).
			g := routePorts(t, svc, func(c *revmeta.Config) { c.Timeout = revmeta.DefaultTimeout }, mod, port)
			c := pingClient(t, g, svc, m.pki)
			if out, err := c.Ping(context.Background(), sv("no deadline")); err != nil || out.GetValue() != "pong no deadline from p0" {
				t.Fatalf("a call without a deadline: %v %v", out, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			var hdr, trl metadata.MD
			out, err := c.Ping(metadata.AppendToOutgoingContext(ctx, "x-echo", "hi"), sv("one"), grpc.Header(&hdr), grpc.Trailer(&trl))
			if err != nil || out.GetValue() != "pong one from p0" {
				t.Fatalf("unary: %v %v", out, err)
			}
			if hdr.Get("x-echo")[0] != "hi" || hdr.Get("x-instance")[0] != "p0" || len(trl.Get("x-served-by")) != 1 || trl.Get("x-served-by")[0] != "p0" {
				t.Errorf("unary metadata: header %v trailer %v", hdr, trl)
			}

			st, err := c.PingStream(ctx, sv("n:5"))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				msg, err := st.Recv()
				if err != nil || msg.GetValue() != fmt.Sprintf("pong %d from p0", i+1) {
					t.Fatalf("stream message %d: %v %v", i, msg, err)
				}
			}
			if _, err := st.Recv(); err != io.EOF {
				t.Fatalf("after 5 messages: %v, want EOF", err)
			}

			col, err := c.PingCollect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 7 {
				if err := col.Send(sv(strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := col.CloseAndRecv(); err != nil || got.GetValue() != "got 7 from p0" {
				t.Fatalf("client streaming: %v %v", got, err)
			}

			chat, err := c.PingChat(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 { // interleaved: each echo comes before the next message goes
				if err := chat.Send(sv("m" + strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
				if got, err := chat.Recv(); err != nil || got.GetValue() != fmt.Sprintf("echo m%d from p0", i) {
					t.Fatalf("chat %d: %v %v", i, got, err)
				}
			}
			_ = chat.CloseSend()
			if _, err := chat.Recv(); err != io.EOF {
				t.Fatalf("chat end: %v", err)
			}

			// A deadline shorter than the call: DEADLINE_EXCEEDED, soon.
			dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			start := time.Now()
			_, err = c.Ping(dctx, sv("sleep:3000"))
			dcancel()
			if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 1500*time.Millisecond {
				t.Errorf("300 ms deadline on a 3 s call: %v after %v", err, time.Since(start))
			}
			// Cancellation reaches the instance: its call ends there too.
			cctx, ccancel := context.WithCancel(ctx)
			go func() { time.Sleep(200 * time.Millisecond); ccancel() }()
			_, err = c.Ping(cctx, sv("sleep:5000"))
			if status.Code(err) != codes.Canceled {
				t.Errorf("cancelled call: %v", err)
			}
			waitInFlight(t, ctx, c, 0)
		})
	}
}

// waitInFlight waits until the instance has n calls in flight (its own count).
func waitInFlight(t *testing.T, ctx context.Context, c *pingpb.Client, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s, err := c.Stats(ctx)
		var st pingpb.Stats
		if err == nil {
			err = json.Unmarshal([]byte(s.GetValue()), &st)
		}
		if err == nil && st.InFlight == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the instance has %d calls in flight (%v), want %d", st.InFlight, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Calls the gateway answers itself are gRPC statuses with the gateway's reason, not an
// HTTP error a gRPC client reports as "unexpected content-type".
func TestGRPCGatewayErrorsAreStatuses(t *testing.T) {
	const svc = "grpc-errors"
	// A revision with no instance: calls are held while it "wakes" (nothing wakes it here).
	g := routePorts(t, svc, func(c *revmeta.Config) { c.Timeout = 30 * time.Second }, func(c *gateway.Config) { c.MaxHeld = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	_, err := pingClient(t, g, "no-such-service", nil).Ping(ctx, sv("x"))
	if s := status.Convert(err); s.Code() != codes.NotFound || !strings.Contains(s.Message(), "no service for host") {
		t.Errorf("unknown host: %v, want NotFound with the gateway's reason", err)
	}

	c := pingClient(t, g, svc, nil)
	// Held past the call's own deadline (grpc-timeout): DEADLINE_EXCEEDED from the
	// gateway, at the deadline.
	dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	_, err = c.Ping(dctx, sv("x"))
	dcancel()
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded || took > time.Second {
		t.Errorf("a held call with a 300 ms deadline: %v after %v", err, took)
	}

	// The same on the wire, with the client waiting longer than its grpc-timeout says: the
	// answer is the gateway's own, a trailers-only response.
	hc := h2Client(g, nil)
	req, _ := http.NewRequest("POST", "http://"+host(svc)+pingpb.MethodPing, strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", "200m")
	start = time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	took = time.Since(start)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/grpc" || resp.Header.Get("Grpc-Status") != "4" ||
		!strings.Contains(resp.Header.Get("Grpc-Message"), "within the request's deadline") || took < 190*time.Millisecond || took > time.Second {
		t.Errorf("grpc-timeout 200m while held: %d %v after %v", resp.StatusCode, resp.Header, took)
	}

	// Two calls fill the held queue (MaxHeld 2); the third is refused: UNAVAILABLE.
	var wg sync.WaitGroup
	hctx, hcancel := context.WithCancel(ctx)
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = c.Ping(hctx, sv("held")) }()
	}
	waitHeld(t, g, svc+"-00001", 2)
	_, err = c.Ping(ctx, sv("over"))
	if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "at capacity") {
		t.Errorf("overflow: %v, want Unavailable with the gateway's reason", err)
	}
	// Cancelling the held calls (RST_STREAM) frees their places at once.
	hcancel()
	wg.Wait()
	waitHeld(t, g, svc+"-00001", 0)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("test ran out of time")
	}
}

// An instance that gives up on a call at its deadline — told the time left in
// grpc-timeout, a gRPC server resets the stream a moment before the gateway's own deadline
// passes — makes the call DEADLINE_EXCEEDED, not UNAVAILABLE as if the instance had failed.
func TestGRPCInstanceResetAtDeadline(t *testing.T) {
	const svc = "grpc-reset-at-deadline"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(strings.TrimSuffix(r.Header.Get("Grpc-Timeout"), "u") + "us"); err == nil {
			time.Sleep(d - 3*time.Millisecond)
		}
		panic(http.ErrAbortHandler) // RST_STREAM, as a gRPC server's deadline does
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	g := routePorts(t, svc, nil, nil, ln.Addr().(*net.TCPAddr).Port)
	hc := h2Client(g, nil)
	for range 3 {
		req, _ := http.NewRequest("POST", "http://"+host(svc)+pingpb.MethodPing, strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Grpc-Timeout", "200m")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if st := resp.Header.Get("Grpc-Status"); st != "4" {
			t.Fatalf("an instance reset at the deadline: grpc-status %q (%s), want 4 (DEADLINE_EXCEEDED)", st, resp.Header.Get("Grpc-Message"))
		}
	}
}
