package gateway

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/rouse-run/rouse/gateway/balance"
)

func TestShareLimits(t *testing.T) {
	mk := func(n int) []*balance.Instance[*backend] {
		out := make([]*balance.Instance[*backend], n)
		for i := range out {
			out[i] = balance.NewInstance(fmt.Sprintf("node/inst-%d", i), &backend{})
		}
		return out
	}
	for _, tc := range []struct{ limit, gateways, instances int }{
		{10, 1, 3}, {10, 3, 3}, {7, 4, 5}, {1, 2, 4}, {100, 7, 2}, {3, 3, 1},
	} {
		per := make([]int64, tc.instances) // slots summed over every gateway
		ins := make([][]*balance.Instance[*backend], tc.gateways)
		for k := 0; k < tc.gateways; k++ {
			ins[k] = mk(tc.instances)
			shareLimits(ins[k], tc.limit, tc.gateways, k)
			for i, in := range ins[k] {
				if l := in.Limit(); l > 0 {
					per[i] += l
				} else if l == 0 {
					t.Fatalf("%+v: gateway %d has an unlimited instance", tc, k)
				}
			}
		}
		for i, s := range per {
			if s != int64(tc.limit) {
				t.Errorf("%+v: instance %d gets %d slots over all gateways, want exactly %d", tc, i, s, tc.limit)
			}
		}
	}
	// More gateways than slots in the whole revision: each still gets one slot somewhere.
	for k := 0; k < 3; k++ {
		ins := mk(1)
		shareLimits(ins, 1, 3, k)
		if ins[0].Limit() != 1 {
			t.Fatalf("gateway %d: limit %d, want the fallback slot", k, ins[0].Limit())
		}
	}
	ins := mk(2)
	shareLimits(ins, 0, 5, 1)
	if ins[0].Limit() != 0 || ins[1].Limit() != 0 {
		t.Fatal("concurrency 0 means unlimited")
	}
}

func parseReq(t *testing.T, raw string) *fasthttp.Request {
	t.Helper()
	var r fasthttp.Request
	if err := r.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	return &r
}

func TestConflictingFraming(t *testing.T) {
	for raw, want := range map[string]bool{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc":                                       false,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n":                        false,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n":   true,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n":   true,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 5\r\n\r\n0\r\n\r\n": false,
	} {
		// Headers only, as the server has them when the handler runs (the body unread).
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			t.Fatal(err)
		}
		if got := conflictingFraming(&h); got != want {
			t.Errorf("%q: %v, want %v", raw, got, want)
		}
	}
}

func TestStripHopByHop(t *testing.T) {
	r := parseReq(t, "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-A, Upgrade\r\nX-A: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: websocket\r\nX-B: 2\r\n\r\n")
	stripRequestHopByHop(&r.Header, true)
	h := r.Header.String()
	for _, bad := range []string{"X-A", "Keep-Alive", "Te:", "Connection"} {
		if strings.Contains(h, bad) {
			t.Errorf("%q left in:\n%s", bad, h)
		}
	}
	if !strings.Contains(h, "Upgrade: websocket") || !strings.Contains(h, "X-B: 2") {
		t.Errorf("upgrade request lost headers:\n%s", h)
	}
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nConnection: close, X-S\r\nX-S: s\r\nProxy-Authenticate: B\r\nX-Ok: 1\r\nContent-Length: 0\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	stripHopByHop(&resp.Header)
	if h := resp.Header.String(); strings.Contains(h, "X-S") || strings.Contains(h, "Proxy-Authenticate") || !strings.Contains(h, "X-Ok: 1") {
		t.Errorf("response:\n%s", h)
	}
}

func TestAppendMillis(t *testing.T) {
	if got := string(appendMillis(nil, 183456*time.Microsecond)); got != "183ms" {
		t.Fatal(got)
	}
}
