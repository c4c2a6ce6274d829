package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/examples/grpc/pingpb"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/registry"
	"github.com/rouse-run/rouse/jobspec"
)

// gRPC end to end: examples/grpc (grpc-go's server, h2c only, readiness by the standard
// health check) behind the gateway, called with grpc-go's client over one h2c connection
// to the gateway's public listener, naming the service in :authority.

// grpcApp is examples/grpc built once per run: a binary at ${bin}/grpc-ping (what
// examples/grpc/service.hcl runs) and a static image in the cluster's registry.
var grpcApp struct {
	once sync.Once
	err  error
}

const grpcAppName = "grpc-ping"

func buildGRPCApp(t *testing.T) {
	t.Helper()
	grpcApp.once.Do(func() {
		bin, err := plat.c.GoBuild("./examples/grpc")
		if err != nil {
			grpcApp.err = err
			return
		}
		if err := os.Symlink(bin, filepath.Join(plat.apps, grpcAppName)); err != nil && !errors.Is(err, os.ErrExist) {
			grpcApp.err = err
			return
		}
		static, err := plat.c.GoBuildStatic("./examples/grpc")
		if err != nil {
			grpcApp.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		reg, err := plat.c.Registry(ctx)
		if err != nil {
			grpcApp.err = err
			return
		}
		ref, err := reg.Push(ctx, grpcAppName+":e2e", registry.Image{Binary: static})
		if err != nil {
			grpcApp.err = err
			return
		}
		// Written once, before any workload reads it; the e2e tests run one at a time.
		plat.images[grpcAppName] = ref.Tag
	})
	if grpcApp.err != nil {
		t.Fatalf("building examples/grpc: %v", grpcApp.err)
	}
}

// grpcSpec is examples/grpc/service.hcl as shipped, run as w runs it, named name (plus
// w's suffix), with its autoscaling block replaced by autoscaling and body added.
func grpcSpec(t *testing.T, w workload, name, body, autoscaling string) string {
	t.Helper()
	buildGRPCApp(t)
	root, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "examples", "grpc", "service.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	replace := func(old, new string) {
		t.Helper()
		if !strings.Contains(src, old) {
			t.Fatalf("examples/grpc/service.hcl no longer has %q", old)
		}
		src = strings.Replace(src, old, new, 1)
	}
	replace(`service "grpc-ping" {`, fmt.Sprintf("service %q {\n%s", name+w.suffix, body))
	replace("  driver    = \"raw_exec\"\n  command   = \"${var.bin}/grpc-ping\"\n", "  "+w.what(grpcAppName)+"\n")
	as := regexp.MustCompile(`(?s)\n  autoscaling \{.*?\n  \}\n`)
	if !as.MatchString(src) {
		t.Fatal("examples/grpc/service.hcl has no autoscaling block")
	}
	src = as.ReplaceAllLiteralString(src, "\n  autoscaling {\n"+autoscaling+"\n  }\n")
	return src
}

// authority is the :authority that reaches a service: its URL's host.
func authority(url string) string { return strings.TrimPrefix(url, "http://") }

// grpcConn is a grpc-go client connection to the gateway's public listener (h2c with
// prior knowledge) naming authority; dials counts its TCP connections.
func grpcConn(t *testing.T, authority string) (cc *grpc.ClientConn, dials *atomic.Int64) {
	t.Helper()
	dials = new(atomic.Int64)
	cc, err := grpc.NewClient("passthrough:///"+plat.gw.PublicAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, dials
}

// instanceOf is the instance an answer names: "pong hi from 4e807bb4 (grpc-ping-00001)".
func instanceOf(reply string) string {
	_, rest, ok := strings.Cut(reply, " from ")
	if !ok {
		return ""
	}
	return strings.Fields(rest + " ")[0]
}

func stats(t *testing.T, c *pingpb.Client) pingpb.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	var s pingpb.Stats
	if err := json.Unmarshal([]byte(out.GetValue()), &s); err != nil {
		t.Fatalf("Stats %q: %v", out.GetValue(), err)
	}
	return s
}

func codeOf(err error) codes.Code { return status.Code(err) }

// Every kind of gRPC call through the gateway to a revision at zero: the first unary call
// wakes it and says it waited; header metadata and trailers pass both ways; server,
// client and bidirectional streams keep their order and interleaving; a deadline and a
// cancellation reach the instance, which stops the call.
func TestGRPCEndToEnd(t *testing.T) {
	eachWorkload(t, testGRPCEndToEnd)
}

func testGRPCEndToEnd(t *testing.T, w workload) {
	// At zero from the start (initial = 0); max = 1, so that Stats asks the instance
	// that served the calls it counts.
	res := plat.apply(t, grpcSpec(t, w, "grpc-e2e", "", `    initial             = 0
    max                 = 1
    window              = "6s"
    scale_to_zero_grace = "3s"`), nil, nil)
	rev := res.Revision
	if !res.AtZero {
		t.Fatalf("apply of an initial = 0 revision did not leave it at zero: %+v", res)
	}
	poll.Until(t, 10*time.Second, rev+" at zero", func() error { return plat.atZero(rev, false) })
	cc, dials := grpcConn(t, authority(res.URL))
	c := pingpb.NewClient(cc)

	// 1. Scale from zero on the first unary call.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	var hdr, trl metadata.MD
	sent := time.Now()
	out, err := c.Ping(ctx, wrapperspb.String("wake"), grpc.Header(&hdr), grpc.Trailer(&trl))
	took := time.Since(sent)
	cancel()
	if err != nil {
		t.Fatalf("first call to %s at zero: %v", rev, err)
	}
	inst := instanceOf(out.GetValue())
	if want := "pong wake from " + inst + " (" + rev + ")"; inst == "" || out.GetValue() != want {
		t.Fatalf("first call answered %q, want %q", out.GetValue(), want)
	}
	coldHdr := strings.ToLower(gateway.ColdStartHeader)
	cold := hdr.Get(coldHdr)
	held, err := time.ParseDuration(strings.Join(cold, ""))
	if len(cold) != 1 || err != nil || held <= 0 {
		t.Fatalf("the first call's header metadata has %s %q, want the time it was held (header %v)", coldHdr, cold, hdr)
	}
	if held > took {
		t.Errorf("held %s, but the whole call took %s", held, took)
	}
	ph, err := plat.wakePhases(t, rev, sent, sent.Add(took))
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("%s gRPC cold start, first unary call in → answer out: %s (gateway held it %s; request → placed %s, placed → task started %s, started → answered %s)",
		w.name, took.Round(time.Millisecond), held, ph[0].Round(time.Millisecond), ph[1].Round(time.Millisecond), ph[2].Round(time.Millisecond))
	t.Log(line)
	fmt.Println("e2e: " + line)

	// 2. Unary, warm: header metadata both ways and the trailer.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	hdr, trl = nil, nil
	out, err = c.Ping(metadata.AppendToOutgoingContext(ctx, "x-echo", "marco"), wrapperspb.String("hi"), grpc.Header(&hdr), grpc.Trailer(&trl))
	cancel()
	if err != nil {
		t.Fatalf("unary: %v", err)
	}
	if want := "pong hi from " + inst + " (" + rev + ")"; out.GetValue() != want {
		t.Errorf("unary answered %q, want %q", out.GetValue(), want)
	}
	for k, want := range map[string]string{"x-echo": "marco", "x-instance": inst, "x-revision": rev} {
		if got := hdr.Get(k); len(got) != 1 || got[0] != want {
			t.Errorf("unary: header metadata %s = %q, want [%q] (header %v)", k, got, want, hdr)
		}
	}
	if got := hdr.Get(coldHdr); len(got) != 0 {
		t.Errorf("a call to a running instance has %s %q", coldHdr, got)
	}
	if got := trl.Get("x-served-by"); len(got) != 1 || got[0] != inst {
		t.Errorf("unary: trailer x-served-by = %q, want [%q] (trailer %v)", got, inst, trl)
	}

	// 2b. A call without a deadline: the gateway gives the instance the revision's
	// timeout (300 s by default) as grpc-timeout, which must be a valid one (at most 8
	// digits, so in a coarser unit than µs beyond 99.999999 s).
	ctx, cancel = context.WithCancel(context.Background())
	bound := time.AfterFunc(10*time.Second, cancel) // a bound for the test, not a deadline
	out, err = c.Ping(ctx, wrapperspb.String("no deadline"))
	bound.Stop()
	cancel()
	if err != nil {
		t.Errorf("unary without a deadline: %v", err)
	} else if want := "pong no deadline from " + inst + " (" + rev + ")"; out.GetValue() != want {
		t.Errorf("unary without a deadline answered %q, want %q", out.GetValue(), want)
	}

	// 3. Server streaming: n:5 → five answers in order, then the trailer.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	ss, err := c.PingStream(ctx, wrapperspb.String("n:5"))
	if err != nil {
		t.Fatalf("PingStream: %v", err)
	}
	var got []string
	for {
		m, err := ss.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("PingStream after %d answers: %v", len(got), err)
		}
		got = append(got, m.GetValue())
	}
	var want []string
	for i := 1; i <= 5; i++ {
		want = append(want, fmt.Sprintf("pong %d from %s (%s)", i, inst, rev))
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("PingStream n:5 answered %q, want %q", got, want)
	}
	if tr := ss.Trailer().Get("x-served-by"); len(tr) != 1 || tr[0] != inst {
		t.Errorf("PingStream trailer x-served-by = %q, want [%q]", tr, inst)
	}
	cancel()

	// 4. Client streaming: seven messages, then one answer.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	cs, err := c.PingCollect(ctx)
	if err != nil {
		t.Fatalf("PingCollect: %v", err)
	}
	for i := range 7 {
		if err := cs.Send(wrapperspb.String(fmt.Sprint(i))); err != nil {
			t.Fatalf("PingCollect send %d: %v", i, err)
		}
	}
	out, err = cs.CloseAndRecv()
	if err != nil {
		t.Fatalf("PingCollect: %v", err)
	}
	if want := "got 7 from " + inst + " (" + rev + ")"; out.GetValue() != want {
		t.Errorf("PingCollect answered %q, want %q", out.GetValue(), want)
	}
	cancel()

	// 5. Bidirectional, interleaved: each message's echo arrives before the next is sent,
	// so nothing waits for the end of either side.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	chat, err := c.PingChat(ctx)
	if err != nil {
		t.Fatalf("PingChat: %v", err)
	}
	var rtt []time.Duration
	for i := 1; i <= 5; i++ {
		msg := fmt.Sprintf("m%d", i)
		start := time.Now()
		if err := chat.Send(wrapperspb.String(msg)); err != nil {
			t.Fatalf("PingChat send %s: %v", msg, err)
		}
		m, err := chat.Recv()
		if err != nil {
			t.Fatalf("PingChat: no echo of %s: %v", msg, err)
		}
		rtt = append(rtt, time.Since(start))
		if want := "echo " + msg + " from " + inst + " (" + rev + ")"; m.GetValue() != want {
			t.Errorf("PingChat answered %q, want %q", m.GetValue(), want)
		}
	}
	if err := chat.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Recv(); err != io.EOF {
		t.Errorf("PingChat after CloseSend: %v, want io.EOF", err)
	}
	cancel()
	t.Logf("bidirectional round trips: %v", rtt)

	// 6. A deadline: sleep:2000 with 300 ms to live ends as DEADLINE_EXCEEDED at ~300 ms.
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	start := time.Now()
	_, err = c.Ping(ctx, wrapperspb.String("sleep:2000"))
	d := time.Since(start)
	cancel()
	t.Logf("sleep:2000 with a 300 ms deadline: %v after %s", err, d.Round(time.Millisecond))
	if codeOf(err) != codes.DeadlineExceeded || d > time.Second {
		t.Errorf("sleep:2000 with a 300 ms deadline: %v after %s, want DeadlineExceeded within 1s", err, d)
	}

	// 7. Cancellation: a sleep:5000 cancelled after 200 ms ends as CANCELLED, and the
	// instance stops it (its in-flight count goes back to 0) instead of sleeping on.
	// (With a deadline of its own, so that this is about the cancel alone: see 2b.)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	done := make(chan error, 1)
	start = time.Now()
	go func() {
		_, err := c.Ping(ctx, wrapperspb.String("sleep:5000"))
		done <- err
	}()
	poll.Until(t, 2*time.Second, "the sleep:5000 call in flight on "+inst, func() error {
		if s := stats(t, c); s.InFlight != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	time.Sleep(time.Until(start.Add(200 * time.Millisecond)))
	cancel()
	cancelled := time.Now()
	select {
	case err = <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("the cancelled call did not return within 2s")
	}
	if codeOf(err) != codes.Canceled {
		t.Errorf("cancelled sleep:5000: %v, want Canceled", err)
	}
	ended := poll.Until(t, time.Second, "the instance's in-flight count back to 0", func() error {
		if s := stats(t, c); s.InFlight != 0 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	s := stats(t, c)
	t.Logf("cancelled after %s: client saw %v; the instance's in_flight was 0 within %s of the cancel (stats %+v)",
		cancelled.Sub(start).Round(time.Millisecond), status.Code(err), ended.Round(time.Millisecond), s)
	if s.MaxInFlight < 1 || s.InFlight != 0 || s.Instance != inst {
		t.Errorf("stats after the cancel: %+v", s)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the client opened %d connections to the gateway, want 1", n)
	}
}

// Per-request balancing: one client connection (one HTTP/2 connection to the gateway)
// carrying 400 unary calls, 16 at a time, spreads over all four instances of a revision —
// which a balancer of connections cannot do: it would pin the connection to one instance
// (100 % on it, 0 on the others).
func TestGRPCPerRequestBalancing(t *testing.T) {
	eachWorkload(t, testGRPCPerRequestBalancing)
}

func testGRPCPerRequestBalancing(t *testing.T, w workload) {
	src := grpcSpec(t, w, "grpc-spread", "", `    min = 4
    max = 4`)
	res, progress := applyWatching(t, src)
	rev := res.Revision
	// Apply waited for an instance with the revision's own check, grpc.health.v1 over h2c,
	// not with an HTTP/1.1 GET (which grpc-go's server refuses).
	for _, p := range progress {
		if strings.Contains(p, "GET ") {
			t.Errorf("apply's progress speaks of an HTTP GET for a grpc readiness check: %q", p)
		}
	}
	poll.Until(t, 30*time.Second, "4 instances ready in the gateway", func() error {
		if g, err := plat.gauge(rev); err != nil || g.Ready != 4 {
			return fmt.Errorf("gateway ready %d (%v)", g.Ready, err)
		}
		return nil
	})
	cc, dials := grpcConn(t, authority(res.URL))
	c := pingpb.NewClient(cc)

	// Each call takes 5 ms at the instance, so that the spread shows the gateway's picks
	// rather than which instance happens to answer a few µs faster (least-loaded picking
	// rightly favours that one).
	const calls, inFlight = 400, 16
	var (
		mu     sync.Mutex
		by     = map[string]int{}
		errs   []string
		next   atomic.Int64
		wg     sync.WaitGroup
		others int
	)
	start := time.Now()
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > calls {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := c.Ping(ctx, wrapperspb.String("sleep:5"))
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, err.Error())
				} else if inst := instanceOf(out.GetValue()); inst != "" {
					by[inst]++
				} else {
					others++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	all := time.Since(start)
	line := fmt.Sprintf("%s gRPC per-call balancing, %d unary calls %d at a time on one connection over 4 instances in %s: %v",
		w.name, calls, inFlight, all.Round(time.Millisecond), by)
	t.Log(line)
	fmt.Println("e2e: " + line)
	if len(errs) > 0 || others > 0 {
		t.Errorf("%d calls failed (%q), %d answers named no instance", len(errs), errs[:min(5, len(errs))], others)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the client opened %d connections to the gateway, want 1", n)
	}
	if len(by) != 4 {
		t.Errorf("%d instances answered, want 4: %v", len(by), by)
	}
	// Even is 25 % each; least-loaded picking with round-robin ties stays close to it.
	// 15–35 % allows for what the timing of 16 calls in flight does to the picks, and is
	// far from what pinning the connection gives (100 % on one instance, 0 on the rest).
	for inst, n := range by {
		if share := float64(n) / calls; share < 0.15 || share > 0.35 {
			t.Errorf("instance %s served %d of %d calls (%.0f %%), want 15–35 %%", inst, n, calls, 100*share)
		}
	}
}

// parseSpec parses an inline spec as plat.apply does.
func parseSpec(t *testing.T, src string) *jobspec.Spec {
	t.Helper()
	s, diags := jobspec.Parse(map[string][]byte{"service.hcl": []byte(src)}, map[string]string{"bin": plat.apps})
	if diags.HasErrors() {
		t.Fatalf("spec: %s", diags.Error())
	}
	return s
}

// applyWatching applies src as plat.apply does and returns apply's progress lines too.
func applyWatching(t *testing.T, src string) (*control.ApplyResult, []string) {
	t.Helper()
	s := parseSpec(t, src)
	var mu sync.Mutex
	var lines []string
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	res, err := plat.ctl.Apply(ctx, control.ApplyOptions{Spec: s, Source: src, Keep: control.DefaultKeep,
		Progress: func(e control.Event) {
			mu.Lock()
			lines = append(lines, fmt.Sprintf("+%s %s: %s", time.Since(start).Round(time.Millisecond), e.Stage, e.Message))
			mu.Unlock()
		}})
	plat.deleteAtEnd(t, s.Namespace, s.Name)
	plat.explainFailure(t)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("apply %s progress:\n  %s", s.Name, strings.Join(lines, "\n  "))
	if err != nil {
		t.Fatalf("apply %s: %v", s.Name, err)
	}
	t.Logf("applied %s: %s revision %s, %s in %s", s.Name, res.Outcome, res.Revision, res.URL, time.Since(start).Round(time.Millisecond))
	return res, lines
}

// Apply waits for a grpc revision with its own check, the gRPC health check over h2c,
// and says so when it is not passing: an instance that never listens fails the apply
// with the probe's reason, not an HTTP GET's.
func TestGRPCApplyWaitsForHealth(t *testing.T) {
	src := `
variable "bin" {
  type = string
}
service "grpc-mute" {
  command  = "/bin/sleep"
  args     = ["3600"]
  protocol = "h2c"
  resources {
    cpu    = 20
    memory = 16
  }
  readiness { type = "grpc" }
  autoscaling {
    max = 1
  }
}
`
	s := parseSpec(t, src)
	plat.deleteAtEnd(t, s.Namespace, s.Name)
	var mu sync.Mutex
	var lines []string
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := plat.ctl.Apply(ctx, control.ApplyOptions{Spec: s, Source: src, Keep: control.DefaultKeep, Wait: 4 * time.Second,
		Progress: func(e control.Event) {
			mu.Lock()
			lines = append(lines, string(e.Stage)+": "+e.Message)
			mu.Unlock()
		}})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("progress:\n  %s", strings.Join(lines, "\n  "))
	var rf *control.RevisionFailedError
	if !errors.As(err, &rf) {
		t.Fatalf("apply of a revision that never listens: %v, want a RevisionFailedError", err)
	}
	t.Logf("apply failed: %s", rf.Reason)
	if !strings.Contains(rf.Reason, "readiness probe grpc.health.v1.Health/Check 127.0.0.1:") || !strings.Contains(rf.Reason, "connection refused") {
		t.Errorf("apply's reason %q does not name the failing gRPC health check", rf.Reason)
	}
	for _, l := range append(lines, rf.Reason) {
		if strings.Contains(l, "GET ") {
			t.Errorf("apply speaks of an HTTP GET for a grpc readiness check: %q", l)
		}
	}
}

// The failures the gateway answers itself reach a gRPC client as gRPC statuses (a
// trailers-only answer), not as an HTTP error grpc-go reports as "unexpected
// content-type": an unknown service is NOT_FOUND, a call held past its deadline for a
// revision that cannot become ready is DEADLINE_EXCEEDED, and a revision that fails to
// start or is at capacity is UNAVAILABLE.
func TestGRPCGatewayErrorsAreStatuses(t *testing.T) {
	w := plat.workloads()[0]
	buildGRPCApp(t)

	t.Run("unknown service", func(t *testing.T) {
		cc, _ := grpcConn(t, "no-such-service.default."+domain)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pingpb.NewClient(cc).Ping(ctx, wrapperspb.String("hi"))
		t.Logf("unknown service: %v", err)
		if codeOf(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "no service for host") {
			t.Errorf("call to an unknown service: %v, want NotFound from the gateway", err)
		}
	})

	t.Run("deadline while waking", func(t *testing.T) {
		// An instance that never listens: the call can only wait for it.
		res := plat.apply(t, `
variable "bin" {
  type = string
}
service "grpc-deaf" {
  command  = "/bin/sleep"
  args     = ["3600"]
  protocol = "h2c"
  resources {
    cpu    = 20
    memory = 16
  }
  readiness { type = "grpc" }
  autoscaling {
    initial             = 0
    max                 = 1
    window              = "6s"
    scale_to_zero_grace = "3s"
  }
}
`, nil, nil)
		cc, _ := grpcConn(t, authority(res.URL))
		c := pingpb.NewClient(cc)

		// grpc-go's own timer ends the call at its deadline whatever the gateway does.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		_, err := c.Ping(ctx, wrapperspb.String("hi"))
		d := time.Since(start)
		cancel()
		t.Logf("grpc-go, 300 ms deadline, revision waking: %v after %s", err, d.Round(time.Millisecond))
		if codeOf(err) != codes.DeadlineExceeded || d > time.Second {
			t.Errorf("held call with a 300 ms deadline: %v after %s, want DeadlineExceeded within 1s", err, d)
		}

		// What the gateway answers itself: the same call with grpc-timeout 300m, from a
		// client that does not give up first.
		r := rawGRPC(t, authority(res.URL), pingpb.MethodPing, "hi", "300m")
		t.Logf("the gateway's own answer to a call with grpc-timeout 300m: %s", r)
		if !r.trailersOnly() || r.code != codes.DeadlineExceeded || r.took > time.Second {
			t.Errorf("the gateway answered a call held past its grpc-timeout of 300 ms with %s, want a trailers-only DEADLINE_EXCEEDED within 1s", r)
		}
	})

	t.Run("failed to start", func(t *testing.T) {
		res := plat.apply(t, `
variable "bin" {
  type = string
}
service "grpc-crash" {
  command  = "/bin/sh"
  args     = ["-c", "echo 'boom: no config' >&2; exit 3"]
  protocol = "h2c"
  resources {
    cpu    = 20
    memory = 16
  }
  readiness { type = "grpc" }
  autoscaling {
    initial = 0
    max     = 1
  }
}
`, nil, nil)
		cc, _ := grpcConn(t, authority(res.URL))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A trailers-only answer: grpc-go hands its fields over as the trailer.
		var trl metadata.MD
		start := time.Now()
		_, err := pingpb.NewClient(cc).Ping(ctx, wrapperspb.String("hi"), grpc.Trailer(&trl))
		t.Logf("a revision whose process exits at start: %v after %s (trailer %v)", err, time.Since(start).Round(time.Millisecond), trl)
		if codeOf(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "boom: no config (exit 3)") {
			t.Errorf("call to a revision that fails to start: %v, want Unavailable with the process's reason", err)
		}
		if len(trl.Get("retry-after")) != 1 {
			t.Errorf("the gateway's UNAVAILABLE has no retry-after (trailer %v)", trl)
		}
	})

	t.Run("at capacity", func(t *testing.T) {
		// One instance taking one call at a time, and no queue in front of it.
		res := plat.apply(t, grpcSpec(t, w, "grpc-full", "  concurrency = 1\n", `    min                   = 1
    max                   = 1
    target_burst_capacity = 0`), nil, nil)
		cc, _ := grpcConn(t, authority(res.URL))
		c := pingpb.NewClient(cc)
		plat.waitGRPCServing(t, c)

		busy := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Ping(ctx, wrapperspb.String("sleep:2000"))
			busy <- err
		}()
		poll.Until(t, 2*time.Second, "the instance busy with the first call", func() error {
			if g, err := plat.gauge(res.Revision); err != nil || g.InFlight != 1 {
				return fmt.Errorf("gateway in flight %d (%v)", g.InFlight, err)
			}
			return nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.Ping(ctx, wrapperspb.String("second"))
		d := time.Since(start)
		t.Logf("a second call while the only slot is taken: %v after %s", err, d.Round(time.Microsecond))
		if codeOf(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "at capacity") || d > time.Second {
			t.Errorf("call beyond capacity: %v after %s, want Unavailable (at capacity) at once", err, d)
		}
		if err := <-busy; err != nil {
			t.Errorf("the call holding the slot: %v", err)
		}
	})
}

// waitGRPCServing waits until a call through the gateway succeeds.
func (p *platform) waitGRPCServing(t *testing.T, c *pingpb.Client) {
	t.Helper()
	poll.Until(t, 10*time.Second, "a call answered through the gateway", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Ping(ctx, wrapperspb.String("ready?"))
		return err
	})
}

// rawAnswer is a gRPC answer read as plain HTTP/2.
type rawAnswer struct {
	httpStatus  int
	contentType string
	inHeader    bool // grpc-status came in the header: a trailers-only answer
	code        codes.Code
	msg         string
	body        int
	took        time.Duration
}

func (r rawAnswer) trailersOnly() bool {
	return r.httpStatus == http.StatusOK && r.contentType == "application/grpc" && r.inHeader && r.body == 0
}

func (r rawAnswer) String() string {
	return fmt.Sprintf("HTTP %d %q, grpc-status %d (%s) in the %s, grpc-message %q, %d body bytes, after %s",
		r.httpStatus, r.contentType, r.code, r.code, map[bool]string{true: "header", false: "trailer"}[r.inHeader],
		r.msg, r.body, r.took.Round(time.Millisecond))
}

// rawGRPC makes a unary call to the gateway over h2c with net/http, with grpc-timeout
// set as given but no deadline of the client's own (10 s at most), so that the answer is
// the gateway's.
func rawGRPC(t *testing.T, authority, method, msg, grpcTimeout string) rawAnswer {
	t.Helper()
	m, err := proto.Marshal(wrapperspb.String(msg))
	if err != nil {
		t.Fatal(err)
	}
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(m)))
	body = append(body, m...)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+plat.gw.PublicAddr()+method, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = authority
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", grpcTimeout)
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("raw gRPC call: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := rawAnswer{httpStatus: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: len(b), took: time.Since(start)}
	st, gm := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	r.inHeader = st != ""
	if !r.inHeader {
		st, gm = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	}
	var n int
	if _, err := fmt.Sscan(st, &n); err != nil {
		n = int(codes.Unknown)
	}
	r.code, r.msg = codes.Code(n), gm
	return r
}
