package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rouse-run/rouse/examples/grpc/pingpb"
)

const (
	testInstance = "test-1"
	testRevision = "grpc-ping-00001"
	from         = "from " + testInstance + " (" + testRevision + ")"
)

// served is one in-process server on 127.0.0.1:0 and a connection to it.
type served struct {
	srv *grpc.Server
	cc  *grpc.ClientConn
	c   *pingpb.Client
}

func start(t *testing.T) *served {
	t.Helper()
	srv, _ := newServer(newPinger(testInstance, testRevision))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &served{srv: srv, cc: cc, c: pingpb.NewClient(cc)}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func (s *served) stats(t *testing.T) pingpb.Stats {
	t.Helper()
	reply, err := s.c.Stats(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var st pingpb.Stats
	if err := json.Unmarshal([]byte(reply.GetValue()), &st); err != nil {
		t.Fatalf("stats %q: %v", reply.GetValue(), err)
	}
	return st
}

// waitIdle waits until the server has no PingService call in flight: the server side of
// a call the client gave up on has ended too.
func (s *served) waitIdle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := s.stats(t)
		if st.InFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still in flight on the server", st.InFlight)
		}
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if s := status.Convert(err); err == nil || s.Code() != code || (msg != "" && s.Message() != msg) {
		t.Fatalf("got %v, want %s %q", err, code, msg)
	}
}

func TestPingMetadata(t *testing.T) {
	s := start(t)
	ctx := metadata.AppendToOutgoingContext(ctxFor(t, 5*time.Second), "x-echo", "marco")
	var header, trailer metadata.MD
	reply, err := s.c.Ping(ctx, wrapperspb.String("hi"), grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := reply.GetValue(), "pong hi "+from; got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
	for md, want := range map[*metadata.MD]map[string]string{
		&header:  {"x-instance": testInstance, "x-revision": testRevision, "x-echo": "marco"},
		&trailer: {"x-served-by": testInstance},
	} {
		for k, v := range want {
			if got := md.Get(k); !slices.Equal(got, []string{v}) {
				t.Errorf("%s = %q, want %q (all: %v)", k, got, v, *md)
			}
		}
	}
	// A failed call names its instance too.
	header, trailer = nil, nil
	_, err = s.c.Ping(ctxFor(t, 5*time.Second), wrapperspb.String("fail:unavailable"), grpc.Header(&header), grpc.Trailer(&trailer))
	wantCode(t, err, codes.Unavailable, "asked to fail")
	if header.Get("x-instance") == nil || trailer.Get("x-served-by") == nil {
		t.Errorf("failed call: header %v, trailer %v", header, trailer)
	}
}

func TestPingFail(t *testing.T) {
	s := start(t)
	for msg, want := range map[string]codes.Code{
		"fail:14":                 codes.Unavailable,
		"fail:NOT_FOUND":          codes.NotFound,
		"fail:resource_exhausted": codes.ResourceExhausted,
		"fail:3":                  codes.InvalidArgument,
	} {
		_, err := s.c.Ping(ctxFor(t, 5*time.Second), wrapperspb.String(msg))
		wantCode(t, err, want, "asked to fail")
	}
	for _, msg := range []string{"fail:99", "fail:nope", "sleep:x", "sleep:-1"} {
		_, err := s.c.Ping(ctxFor(t, 5*time.Second), wrapperspb.String(msg))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", msg, err)
		}
	}
	reply, err := s.c.Ping(ctxFor(t, 5*time.Second), wrapperspb.String("fail:0"))
	if err != nil || reply.GetValue() != "pong fail:0 "+from {
		t.Errorf("fail:0: %v %v", reply, err)
	}
}

func TestPingSleep(t *testing.T) {
	s := start(t)
	reply, err := s.c.Ping(ctxFor(t, 5*time.Second), wrapperspb.String("sleep:20"))
	if err != nil || reply.GetValue() != "pong sleep:20 "+from {
		t.Fatalf("sleep:20: %v %v", reply, err)
	}

	begin := time.Now()
	_, err = s.c.Ping(ctxFor(t, 50*time.Millisecond), wrapperspb.String("sleep:5000"))
	wantCode(t, err, codes.DeadlineExceeded, "")
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("deadline of 50ms took %v", d)
	}
	s.waitIdle(t) // the server saw the deadline too and stopped sleeping

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = s.c.Ping(ctx, wrapperspb.String("sleep:5000"))
	wantCode(t, err, codes.Canceled, "")
	s.waitIdle(t)
}

func TestPingStream(t *testing.T) {
	s := start(t)
	stream, err := s.c.PingStream(ctxFor(t, 5*time.Second), wrapperspb.String("n:5"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	begin := time.Now()
	for {
		reply, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, reply.GetValue())
	}
	if d := time.Since(begin); d < 40*time.Millisecond {
		t.Errorf("5 replies 10 ms apart came in %v", d)
	}
	var want []string
	for i := 1; i <= 5; i++ {
		want = append(want, fmt.Sprintf("pong %d %s", i, from))
	}
	if !slices.Equal(got, want) {
		t.Errorf("replies %q, want %q", got, want)
	}
	if h, _ := stream.Header(); !slices.Equal(h.Get("x-instance"), []string{testInstance}) {
		t.Errorf("header %v", h)
	}
	if tr := stream.Trailer(); !slices.Equal(tr.Get("x-served-by"), []string{testInstance}) {
		t.Errorf("trailer %v", tr)
	}

	// A stream stops when its client goes away.
	ctx, cancel := context.WithCancel(t.Context())
	stream, err = s.c.PingStream(ctx, wrapperspb.String("n:100000"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	s.waitIdle(t)

	stream, err = s.c.PingStream(ctxFor(t, 5*time.Second), wrapperspb.String("five"))
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.InvalidArgument, "")
}

func TestPingCollect(t *testing.T) {
	s := start(t)
	stream, err := s.c.PingCollect(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b", "c"} {
		if err := stream.Send(wrapperspb.String(m)); err != nil {
			t.Fatal(err)
		}
	}
	reply, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := reply.GetValue(), "got 3 "+from; got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
}

func TestPingChat(t *testing.T) {
	s := start(t)
	stream, err := s.c.PingChat(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Each answer comes before the next message is sent: the two sides interleave.
	for _, m := range []string{"one", "two", "three"} {
		if err := stream.Send(wrapperspb.String(m)); err != nil {
			t.Fatal(err)
		}
		reply, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := reply.GetValue(), "echo "+m+" "+from; got != want {
			t.Errorf("reply %q, want %q", got, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
	if tr := stream.Trailer(); !slices.Equal(tr.Get("x-served-by"), []string{testInstance}) {
		t.Errorf("trailer %v", tr)
	}
}

func TestHealth(t *testing.T) {
	s := start(t)
	hc := healthpb.NewHealthClient(s.cc)
	for _, svc := range []string{"", pingpb.ServiceName} {
		resp, err := hc.Check(ctxFor(t, 5*time.Second), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("%q: %v", svc, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%q: %s", svc, resp.GetStatus())
		}
	}
	// Health checks are not counted as PingService calls.
	if st := s.stats(t); st.Served != 0 || st.MaxInFlight != 0 {
		t.Errorf("stats after health checks: %+v", st)
	}
}

func TestStatsMaxInFlight(t *testing.T) {
	s := start(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := s.c.Ping(ctxFor(t, 5*time.Second), wrapperspb.String("sleep:200"))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := s.stats(t)
	want := pingpb.Stats{Instance: testInstance, Revision: testRevision, Served: 4, InFlight: 0, MaxInFlight: 4}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
}

// TestReflection: what `grpcurl list` and `grpcurl describe` ask for.
func TestReflection(t *testing.T) {
	s := start(t)
	stream, err := reflectionpb.NewServerReflectionClient(s.cc).ServerReflectionInfo(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	for _, want := range []string{pingpb.ServiceName, "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("services %q lack %s", names, want)
		}
	}
	resp = ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: pingpb.ServiceName,
	}})
	if fds := resp.GetFileDescriptorResponse().GetFileDescriptorProto(); len(fds) == 0 {
		t.Errorf("no file for %s: %v", pingpb.ServiceName, resp)
	}
}

// TestStop: a stop waits for calls in flight, but not longer than its bound.
func TestStop(t *testing.T) {
	s := start(t)
	chat, err := s.c.PingChat(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Send(wrapperspb.String("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Recv(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	stop(s.srv, 200*time.Millisecond) // the chat stays open: Stop cuts it off
	if d := time.Since(begin); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("stop took %v with a bound of 200ms", d)
	}
	if _, err := chat.Recv(); err == nil {
		t.Error("chat still open after stop")
	}
}

func TestInstanceName(t *testing.T) {
	t.Setenv("ROUSE_INSTANCE", "")
	t.Setenv("NOMAD_ALLOC_ID", "4e807bb4-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
	if got := instanceName(); got != "4e807bb4" {
		t.Errorf("from NOMAD_ALLOC_ID: %q", got)
	}
	t.Setenv("ROUSE_INSTANCE", "mine")
	if got := instanceName(); got != "mine" {
		t.Errorf("from ROUSE_INSTANCE: %q", got)
	}
}
