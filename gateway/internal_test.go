package gateway

import (
	"fmt"
	"testing"

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
