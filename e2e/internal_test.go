package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

// An internal service (visibility = "internal") on real Nomad: applied at zero, it is not
// on the public listener (404, as an unknown host); another service — the test, on the
// cluster network — reaches it through the gateway's internal listener, which wakes it
// from zero; once idle it scales to zero again and the next internal request wakes it
// again.
func TestInternalServiceFromZero(t *testing.T) {
	w := plat.workloads()[0] // raw_exec: the visibility is the gateway's, whatever runs
	res := plat.apply(t, spec(w, "account", "hello", "  visibility = \"internal\"", "    initial = 0"), nil, nil)
	if res.URL != "http://account.default.internal" || !res.AtZero {
		t.Fatalf("apply: URL %q at zero %v", res.URL, res.AtZero)
	}
	inside := loadgen.Client(plat.gw.InternalAddr(), 8, 60*time.Second)
	get := func(c *http.Client, host string) response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", host, err)
		}
		defer resp.Body.Close()
		var b [256]byte
		n, _ := resp.Body.Read(b[:])
		return response{code: resp.StatusCode, revision: resp.Header.Get("X-Revision"), cold: resp.Header.Get(gateway.ColdStartHeader),
			body: string(b[:n]), took: time.Since(start)}
	}

	for _, h := range []string{"account.default.internal", "account.default.localhost"} {
		if r := get(plat.http, h); r.code != http.StatusNotFound {
			t.Fatalf("public listener, %s: %d %q, want 404", h, r.code, r.body)
		}
	}
	if d, _, _ := plat.instances(res.Revision); d != 0 {
		t.Fatalf("a 404 on the public listener woke it: count %d", d)
	}

	for wake := 1; wake <= 2; wake++ {
		r := get(inside, "account.default.internal")
		if r.code != http.StatusOK || r.body != "Hello e2e!\n" || r.revision != res.Revision || r.cold == "" {
			t.Fatalf("wake %d through the internal listener: %d %q from %q, cold-start %q", wake, r.code, r.body, r.revision, r.cold)
		}
		t.Logf("wake %d from zero through the internal listener: %s (held %s)", wake, r.took.Round(time.Millisecond), r.cold)
		if wake == 2 {
			break
		}
		idle := poll.Until(t, 45*time.Second, "idle revision scaled to zero", func() error { return plat.atZero(res.Revision, true) })
		t.Logf("idle → zero in %s", idle.Round(100*time.Millisecond))
	}
}
