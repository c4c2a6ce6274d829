package scaler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/scaler/kpa"
)

const benchRevisions = 10_000

func benchStubs() []*nomadapi.JobListStub {
	stubs := make([]*nomadapi.JobListStub, benchRevisions)
	for i := range stubs {
		cfg := revmeta.Defaults("default", fmt.Sprintf("svc%d", i), fmt.Sprintf("svc%d-00001", i))
		stubs[i] = &nomadapi.JobListStub{ID: cfg.Revision, Namespace: "default", Meta: cfg.Meta(), JobModifyIndex: uint64(i + 1),
			Type: "service", Status: "running", Datacenters: []string{"*"},
			JobSummary: &nomadapi.JobSummary{JobID: cfg.Revision, Namespace: "default",
				Summary: map[string]nomadapi.TaskGroupSummary{revmeta.Group: {Running: 1 + i%5}}}}
	}
	return stubs
}

func benchReports(gateways int, at time.Time, seq uint64) [][]byte {
	var out [][]byte
	for g := range gateways {
		rep := gauges.Report{Gateway: fmt.Sprintf("gw-%d", g), At: at}
		for i := range benchRevisions {
			rep.Revisions = append(rep.Revisions, gauges.Revision{Namespace: "default", Revision: fmt.Sprintf("svc%d-00001", i),
				InFlight: int64(i % 300), RequestsTotal: seq * uint64(i), Ready: 1})
		}
		var b bytes.Buffer
		gauges.Write(&b, rep)
		out = append(out, b.Bytes())
	}
	return out
}

// BenchmarkTick10k is the CPU of one leader tick for 10 000 revisions and two gateways,
// everything but the network: parse both gateways' /gauges, sync the job listing, sum the
// samples, decide, snapshot for the metrics. The budget (DESIGN.md) is 50 ms.
func BenchmarkTick10k(b *testing.B) {
	t := newTable(kpa.Options{Granularity: 2 * time.Second}, zap.NewNop())
	stubs := benchStubs()
	now := time.Unix(1_700_000_000, 0)
	t.sync(listing{stubs: stubs})
	for _, r := range t.byJob {
		t.setCount(r, r.ready, r.cfgIndex)
	}
	bodies := benchReports(2, now, 1)
	var counts [kpa.NumReasons]int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now = now.Add(2 * time.Second)
		var reps []gauges.Report
		for _, body := range bodies {
			rep, err := gauges.Read(bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			rep.At = now
			reps = append(reps, rep)
		}
		t.sync(listing{stubs: stubs})
		data, partial, rpsPartial := t.observe(reps, 0)
		t.decide(now, data, partial, rpsPartial, &counts)
		_ = t.snapshot()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/tick")
}

// BenchmarkDecodeJobList10k is the cost of decoding Nomad's job list with meta for 10 000
// revisions: the part of a tick spent in the Nomad client.
func BenchmarkDecodeJobList10k(b *testing.B) {
	body, err := json.Marshal(benchStubs())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		var out []*nomadapi.JobListStub
		if err := json.Unmarshal(body, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/list")
}
