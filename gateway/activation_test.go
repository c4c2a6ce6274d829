package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// pollActivations long-polls /activations until rev shows up, and returns when it did.
// It first reads the current sequence (wait=0 answers at once), then long-polls after it;
// listening is closed once that first long poll is written to the gateway, so the test
// sends its requests to a gateway with a scaler listening, as a sleep used to pretend.
func pollActivations(ctx context.Context, g *gateway.Gateway, rev string, listening chan<- struct{}) (time.Time, error) {
	var once sync.Once
	listen := func() { once.Do(func() { close(listening) }) }
	defer listen()
	get := func(after uint64, wait string, written func()) (uint64, []gauges.Activation, error) {
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
			if written != nil {
				written()
			}
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET",
			fmt.Sprintf("http://%s/activations?after=%d&wait=%s", g.AdminAddr(), after, wait), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		return gauges.ReadActivations(resp.Body)
	}
	after, _, err := get(0, "0s", nil)
	if err != nil {
		return time.Time{}, err
	}
	for ctx.Err() == nil {
		seq, as, err := get(after, "20s", listen)
		if err != nil {
			return time.Time{}, err
		}
		after = seq
		for _, a := range as {
			if a.Revision == rev && a.Held > 0 {
				return time.Now(), nil
			}
		}
	}
	return time.Time{}, ctx.Err()
}

// A revision that never starts: held requests get 503 with Retry-After at the activation
// timeout, which the revision's own timeout caps; scalers were told at once.
func TestActivationFailure503(t *testing.T) {
	deploy(t, revision{svc: "never", name: "never-00001", count: 0, cfg: func(c *revmeta.Config) { c.Timeout = 1500 * time.Millisecond }})
	setRoute(t, "never", store.RouteTarget{Revision: "never-00001", Percent: 100})

	for _, tc := range []struct {
		name       string
		activation time.Duration
		want       time.Duration
	}{
		{"gateway activation timeout", 700 * time.Millisecond, 700 * time.Millisecond},
		{"capped by the revision timeout", 30 * time.Second, 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, func(c *gateway.Config) { c.ActivationTimeout = tc.activation })
			waitReady(t, g, "never-00001", 0)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			told := make(chan time.Time, 1)
			listening := make(chan struct{})
			go func() {
				at, err := pollActivations(ctx, g, "never-00001", listening)
				if err == nil {
					told <- at
				}
			}()
			<-listening
			start := time.Now()
			a := get(client(g, 1), host("never"), "/")
			if a.status != 503 || a.header.Get("Retry-After") == "" || !strings.Contains(a.body, "could not be started") {
				t.Fatalf("got %d %v %q", a.status, a.header, a.body)
			}
			if a.took < tc.want-50*time.Millisecond || a.took > tc.want+700*time.Millisecond {
				t.Fatalf("503 after %s, want ≈%s", a.took, tc.want)
			}
			select {
			case at := <-told:
				if d := at.Sub(start); d > 200*time.Millisecond {
					t.Fatalf("the /activations long poll answered %s after the request arrived", d)
				} else {
					t.Logf("activation announced %s after the request arrived; 503 after %s", d.Round(time.Millisecond), a.took.Round(time.Millisecond))
				}
			default:
				t.Fatal("the /activations long poll never listed the revision")
			}
			if g := gaugeOf(t, g, "never-00001"); g.Held != 0 || g.RequestsTotal != 1 {
				t.Fatalf("gauges after: %+v", g)
			}
		})
	}
}

// Scale from zero with a stand-in scaler: a hook long-polls /activations and scales the
// Nomad job to 1 the moment the gateway announces held requests. Every held request is
// released (by the gateway's own probe, before Consul's check passes) and says how long
// it waited.
func TestScaleFromZero(t *testing.T) {
	const rev = "cold-00001"
	deploy(t, revision{svc: "cold", name: rev, count: 0})
	setRoute(t, "cold", store.RouteTarget{Revision: rev, Percent: 100})
	var accessLog lockedBuffer
	g := startGateway(t, func(c *gateway.Config) {
		c.AccessLog = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &accessLog, zap.InfoLevel))
	})
	waitReady(t, g, rev, 0)
	c := client(g, 32)

	var firsts, notices []time.Duration
	const rounds, burst = 4, 20
	for round := 0; round < rounds; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		scaled := make(chan time.Time, 1)
		listening := make(chan struct{})
		go func() {
			at, err := pollActivations(ctx, g, rev, listening)
			if err != nil {
				return
			}
			scale(t, rev, 1)
			scaled <- at
		}()
		<-listening
		start := time.Now()
		as := parallel(burst, burst, func(int) answer { return get(c, host("cold"), "/") })
		cancel()
		var noticed time.Time
		select {
		case noticed = <-scaled:
		default:
			t.Fatal("the hook never saw the activation")
		}
		first := time.Duration(1 << 62)
		for i, a := range as {
			if a.err != nil || a.status != 200 {
				t.Fatalf("round %d request %d: %d %v %q", round, i, a.status, a.err, a.body)
			}
			cs := a.header.Get(gateway.ColdStartHeader)
			if !strings.HasSuffix(cs, "ms") {
				t.Fatalf("round %d request %d: %s = %q", round, i, gateway.ColdStartHeader, cs)
			}
			first = min(first, a.took)
		}
		firsts = append(firsts, first)
		notices = append(notices, noticed.Sub(start))
		t.Logf("round %d: %d requests from zero, first answer after %s (scaler told after %s), %s on the first: %s",
			round, burst, first.Round(time.Millisecond), noticed.Sub(start).Round(time.Millisecond), gateway.ColdStartHeader, as[0].header.Get(gateway.ColdStartHeader))

		// Back to zero: the gateway stops routing to it as soon as Consul deregisters it.
		scale(t, rev, 0)
		waitReady(t, g, rev, 0)
		cluster.WaitPassing(t, rev, 0)
	}
	slices.Sort(firsts)
	slices.Sort(notices)
	t.Logf("scale from zero, request in → response out: median %s, max %s over %d rounds; scaler told after %s (median)",
		firsts[len(firsts)/2].Round(time.Millisecond), firsts[len(firsts)-1].Round(time.Millisecond), rounds, notices[len(notices)/2].Round(time.Millisecond))
	m := adminGet(t, g, "/metrics")
	if !strings.Contains(m, `rouse_gateway_cold_start_wait_seconds_count{namespace="default",revision="cold-00001",service="cold"} `+fmt.Sprint(rounds*burst)) {
		t.Fatalf("cold start histogram does not count %d waits:\n%s", rounds*burst, grepLines(m, "cold_start"))
	}
	t.Logf("probes: %s", grepLines(m, "readiness_probes_total"))
	// Each request that waited says so in its access-log line.
	waited := 0
	for _, l := range strings.Split(strings.TrimSpace(accessLog.String()), "\n") {
		var e struct {
			Revision  string  `json:"revision"`
			Status    int     `json:"status"`
			ColdStart float64 `json:"cold_start"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		if e.Revision == rev && e.Status == 200 && e.ColdStart > 0 {
			waited++
		}
	}
	if waited != rounds*burst {
		t.Fatalf("%d access-log lines with cold_start, want %d", waited, rounds*burst)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
