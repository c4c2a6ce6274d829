// grpc-ping is rouse's gRPC example, after Knative's grpc-ping-go: PingService (see
// pingpb) with the four kinds of RPC, grpc.health.v1.Health (the platform's readiness
// check) and server reflection, served as plain h2c on $PORT.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rouse-run/rouse/examples/grpc/pingpb"
)

// stopBound is how long a stop waits for calls in flight before cutting them off.
const stopBound = 10 * time.Second

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	p := newPinger(instanceName(), os.Getenv("ROUSE_REVISION"))
	lis, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatal(err)
	}
	srv, hs := newServer(p)
	logger := log.New(os.Stdout, "", log.LstdFlags) // stdout: what `rouse logs` shows
	logger.Printf("grpc-ping: listening on :%s (h2c, instance %s, revision %q)", port, p.instance, p.revision)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-sig:
	}
	hs.Shutdown() // health checks answer NOT_SERVING while the calls in flight finish
	stop(srv, stopBound)
}

// instanceName names this process in answers: $ROUSE_INSTANCE, else the Nomad allocation
// (its first 8 characters, as `rouse logs` shows it), else the host name.
func instanceName() string {
	if s := os.Getenv("ROUSE_INSTANCE"); s != "" {
		return s
	}
	if s := os.Getenv("NOMAD_ALLOC_ID"); s != "" {
		return s[:min(8, len(s))]
	}
	if s, err := os.Hostname(); err == nil && s != "" {
		return s
	}
	return "unknown"
}

// newServer returns a grpc.Server (not yet serving) with p as PingService, the health
// service (SERVING for "" and for PingService) and reflection.
func newServer(p *pinger) (*grpc.Server, *health.Server) {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(p.unaryInterceptor),
		grpc.ChainStreamInterceptor(p.streamInterceptor),
	)
	pingpb.Register(srv, p)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pingpb.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}

// stop stops srv gracefully (no new calls; those in flight finish), but for at most bound:
// then it closes what is left.
func stop(srv *grpc.Server, bound time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

// pinger implements PingService and counts its calls.
type pinger struct {
	instance, revision string
	inFlight           atomic.Int64
	maxInFlight        atomic.Int64
	served             atomic.Int64
}

func newPinger(instance, revision string) *pinger {
	return &pinger{instance: instance, revision: revision}
}

// isPing tells PingService's methods from health's and reflection's.
func isPing(fullMethod string) bool { return strings.HasPrefix(fullMethod, "/"+pingpb.ServiceName+"/") }

// track counts a call in flight until the returned func is called.
func (p *pinger) track() (done func()) {
	n := p.inFlight.Add(1)
	for m := p.maxInFlight.Load(); n > m && !p.maxInFlight.CompareAndSwap(m, n); m = p.maxInFlight.Load() {
	}
	return func() {
		p.inFlight.Add(-1)
		p.served.Add(1)
	}
}

// header is the header metadata of every PingService answer: x-instance, x-revision if
// known, and the request's x-echo.
func (p *pinger) header(ctx context.Context) metadata.MD {
	md := metadata.Pairs("x-instance", p.instance)
	if p.revision != "" {
		md.Set("x-revision", p.revision)
	}
	if in, ok := metadata.FromIncomingContext(ctx); ok {
		if echo := in.Get("x-echo"); len(echo) > 0 {
			md.Set("x-echo", echo...)
		}
	}
	return md
}

func (p *pinger) trailer() metadata.MD { return metadata.Pairs("x-served-by", p.instance) }

func (p *pinger) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !isPing(info.FullMethod) {
		return handler(ctx, req)
	}
	if info.FullMethod != pingpb.MethodStats {
		defer p.track()()
	}
	if err := grpc.SetHeader(ctx, p.header(ctx)); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, p.trailer()); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (p *pinger) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !isPing(info.FullMethod) {
		return handler(srv, ss)
	}
	defer p.track()()
	if err := ss.SetHeader(p.header(ss.Context())); err != nil {
		return err
	}
	ss.SetTrailer(p.trailer())
	return handler(srv, ss)
}

// from is the end of every answer: "from <instance>", and the revision if known.
func (p *pinger) from() string {
	if p.revision != "" {
		return "from " + p.instance + " (" + p.revision + ")"
	}
	return "from " + p.instance
}

// Ping answers "pong <msg> from <instance>". "sleep:<ms>" first waits that long (or until
// the call's deadline or cancellation); "fail:<code>" fails with that status code, a
// number or a name (fail:14, fail:unavailable).
func (p *pinger) Ping(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	msg := in.GetValue()
	if s, ok := strings.CutPrefix(msg, "sleep:"); ok {
		ms, err := strconv.Atoi(s)
		if err != nil || ms < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "sleep:<ms> wants a count of milliseconds, not %q", s)
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if s, ok := strings.CutPrefix(msg, "fail:"); ok {
		c, err := parseCode(s)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "fail:<code>: %v", err)
		}
		if c != codes.OK {
			return nil, status.Error(c, "asked to fail")
		}
	}
	return wrapperspb.String(fmt.Sprintf("pong %s %s", msg, p.from())), nil
}

// parseCode reads a status code by number (14) or name (UNAVAILABLE, in any case).
func parseCode(s string) (codes.Code, error) {
	var c codes.Code
	if _, err := strconv.Atoi(s); err != nil {
		s = strconv.Quote(strings.ToUpper(s))
	}
	err := c.UnmarshalJSON([]byte(s))
	return c, err
}

// maxStream bounds PingStream's count.
const maxStream = 100000

// PingStream answers "n:<count>" with count messages "pong <i> from <instance>", 10 ms
// apart, until the call ends.
func (p *pinger) PingStream(in *wrapperspb.StringValue, stream pingpb.StreamServer) error {
	s, ok := strings.CutPrefix(in.GetValue(), "n:")
	n, err := strconv.Atoi(s)
	if !ok || err != nil || n < 0 || n > maxStream {
		return status.Errorf(codes.InvalidArgument, "PingStream wants n:<count> (0–%d), not %q", maxStream, in.GetValue())
	}
	ctx := stream.Context()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 1; i <= n; i++ {
		if i > 1 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		if err := stream.Send(wrapperspb.String(fmt.Sprintf("pong %d %s", i, p.from()))); err != nil {
			return err
		}
	}
	return nil
}

// PingCollect reads until the client closes its side, then answers "got <n> from
// <instance>".
func (p *pinger) PingCollect(stream pingpb.CollectServer) error {
	n := 0
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(wrapperspb.String(fmt.Sprintf("got %d %s", n, p.from())))
		}
		if err != nil {
			return err
		}
		n++
	}
}

// PingChat answers each message as it comes with "echo <msg> from <instance>".
func (p *pinger) PingChat(stream pingpb.ChatServer) error {
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(wrapperspb.String(fmt.Sprintf("echo %s %s", in.GetValue(), p.from()))); err != nil {
			return err
		}
	}
}

// Stats answers the counters as JSON (pingpb.Stats).
func (p *pinger) Stats(context.Context, *emptypb.Empty) (*wrapperspb.StringValue, error) {
	b, err := json.Marshal(pingpb.Stats{
		Instance:    p.instance,
		Revision:    p.revision,
		Served:      p.served.Load(),
		InFlight:    p.inFlight.Load(),
		MaxInFlight: p.maxInFlight.Load(),
	})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return wrapperspb.String(string(b)), nil
}
