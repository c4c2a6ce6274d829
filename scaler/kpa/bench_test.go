package kpa

import "testing"

// BenchmarkTick10k is one scaler tick for 10 000 revisions: record a sample and decide,
// each. The budget (DESIGN.md) is 50 ms of CPU per tick.
func BenchmarkTick10k(b *testing.B) {
	const n = 10_000
	revs := make([]*Revision, n)
	counts := make([]int, n)
	for i := range revs {
		revs[i] = New(cfg(nil), Options{Granularity: tick})
		counts[i] = 1 + i%7
	}
	now := epoch
	// Fill the windows first so every decision averages full buckets.
	for range 40 {
		now = now.Add(tick)
		for i, r := range revs {
			r.Record(now, Sample{Concurrency: float64(i % 500)})
			counts[i] = r.Decide(now, counts[i], counts[i]).Desired
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for it := 0; b.Loop(); it++ {
		now = now.Add(tick)
		for i, r := range revs {
			r.Record(now, Sample{Concurrency: float64((i + it) % 500)})
			counts[i] = r.Decide(now, counts[i], counts[i]).Desired
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/tick")
}
