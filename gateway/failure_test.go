package gateway_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// The scaler's failure record (every instance of the revision failed to start): requests
// held for it are answered 503 with the reason the moment the record lands, new ones get
// the same at once while it is in force, and once it has passed a request is held again
// (a fixed config can wake). A record of another spec of the same name is not applied.
func TestFailureRecordAnswersHeldRequests(t *testing.T) {
	cfg := deploy(t, revision{svc: "crashy", name: "crashy-00001", count: 0, cfg: func(c *revmeta.Config) { c.SpecHash = "h1" }})
	setRoute(t, "crashy", store.RouteTarget{Revision: "crashy-00001", Percent: 100})
	st := store.New(cluster.Consul)
	t.Cleanup(func() { _ = st.DeleteFailure(context.Background(), ns, cfg.Revision) })
	g := startGateway(t, func(c *gateway.Config) { c.ActivationTimeout = 20 * time.Second })
	waitReady(t, g, "crashy-00001", 0)
	c := client(g, 4)

	held := make(chan answer, 1)
	go func() { held <- get(c, host("crashy"), "/") }()
	waitHeld(t, g, "crashy-00001", 1)
	now := time.Now()
	put := func(f store.Failure) {
		t.Helper()
		if err := st.PutFailure(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	put(store.Failure{Namespace: ns, Revision: "crashy-00001", SpecHash: "h1", Reason: "boom: config missing (exit 3)",
		At: now, RetryAt: now.Add(3 * time.Second), RetryAfter: 3, Attempt: 1})
	landed := time.Now()
	a := <-held
	want := "rouse: revision crashy-00001 failed to start: boom: config missing (exit 3)\n"
	if a.status != 503 || a.body != want {
		t.Fatalf("held request got %d %q, want 503 %q", a.status, a.body, want)
	}
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || ra > 3 {
		t.Fatalf("Retry-After %q, want 1..3", a.header.Get("Retry-After"))
	}
	if d := time.Since(landed); d > time.Second {
		t.Fatalf("answered %s after the record landed", d)
	}
	t.Logf("held request answered %s after the record was written", time.Since(landed).Round(time.Millisecond))

	b := get(c, host("crashy"), "/")
	if b.status != 503 || b.body != want || b.took > 100*time.Millisecond {
		t.Fatalf("a request while the record is in force got %d %q after %s", b.status, b.body, b.took)
	}
	if gaugeOf(t, g, "crashy-00001").Held != 0 {
		t.Fatal("requests still held")
	}
	if !strings.Contains(adminGet(t, g, "/metrics"), `rouse_gateway_rejected_requests_total{reason="revision_failed"} 2`) {
		t.Fatal(`rouse_gateway_rejected_requests_total{reason="revision_failed"} is not 2`)
	}

	// Past RetryAt the revision may wake again: a request is held (and times out here,
	// as nothing scales the job).
	poll.Until(t, 5*time.Second, "the record's RetryAt", poll.True(func() bool { return !time.Now().Before(now.Add(3 * time.Second)) }))
	go func() { held <- get(c, host("crashy"), "/") }()
	waitHeld(t, g, "crashy-00001", 1)

	// A record for another spec of the same name is not this revision's.
	put(store.Failure{Namespace: ns, Revision: "crashy-00001", SpecHash: "other", Reason: "boom",
		At: time.Now(), RetryAt: time.Now().Add(time.Minute), RetryAfter: 60, Attempt: 1})
	select {
	case a := <-held:
		t.Fatalf("a record of another spec answered the held request: %d %q", a.status, a.body)
	case <-time.After(500 * time.Millisecond):
	}
	// One of this spec does.
	put(store.Failure{Namespace: ns, Revision: "crashy-00001", SpecHash: "h1", Reason: "again",
		At: time.Now(), RetryAt: time.Now().Add(time.Minute), RetryAfter: 60, Attempt: 2})
	a = <-held
	if a.status != 503 || !strings.Contains(a.body, "failed to start: again") {
		t.Fatalf("held request got %d %q", a.status, a.body)
	}
}

// waitHeld waits until the gateway holds n requests for rev.
func waitHeld(t *testing.T, g *gateway.Gateway, rev string, n int64) {
	t.Helper()
	poll.Until(t, 10*time.Second, rev+" holding requests", func() error {
		if got := gaugeOf(t, g, rev).Held; got != n {
			return errorf("held %d, want %d", got, n)
		}
		return nil
	})
}
