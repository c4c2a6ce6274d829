package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/jobspec"
)

func TestDataplaneShape(t *testing.T) {
	k := defaultKnative()
	k.DirectD, k.Dataplane, k.Cooldown = 60*time.Second, 300*time.Second, 10*time.Second
	s := dataplaneShape(k)
	if got := s.Duration(); got != 370*time.Second {
		t.Errorf("duration %s", got)
	}
	direct, gw := s.Rate(true), s.Rate(false)
	for _, tc := range []struct {
		el         time.Duration
		direct, gw float64
	}{{0, 1000, 0}, {59999 * time.Millisecond, 1000, 0}, {60 * time.Second, 0, 1000}, {359 * time.Second, 0, 1000}, {360 * time.Second, 0, 0}} {
		if d, g := direct(tc.el), gw(tc.el); d != tc.direct || g != tc.gw {
			t.Errorf("at %s: direct %g gateway %g, want %g %g", tc.el, d, g, tc.direct, tc.gw)
		}
		if got := s.Target(tc.el); got != tc.direct+tc.gw {
			t.Errorf("target at %s = %g", tc.el, got)
		}
	}
	if from, to := s.span(true); from != 0 || to != 60 {
		t.Errorf("direct span %d–%d", from, to)
	}
	if from, to := s.span(false); from != 60 || to != 360 {
		t.Errorf("gateway span %d–%d", from, to)
	}
	if s.expected() != 360000 || !s.HasDirect() || len(s.Scaled) != 0 {
		t.Errorf("expected %d, direct %v, scaled %v", s.expected(), s.HasDirect(), s.Scaled)
	}
	sp := &jobspec.Spec{Concurrency: 7, Autoscaling: revmeta.DefaultAutoscaling()}
	s.Tune(sp)
	if a := sp.Autoscaling; a.Min != 5 || a.Max != 5 || a.Initial != 5 || sp.Concurrency != 0 {
		t.Errorf("tuned to %+v, concurrency %d", a, sp.Concurrency)
	}
}

func TestLoadTestShapeScaled(t *testing.T) {
	k := defaultKnative()
	k.LoadScale = 1.0 / 3
	s := loadTestShape(k)
	if n := scaledNote("rate", 0.5, 1000); n != "rate: 500 rps instead of Knative's 1000 (÷2)" {
		t.Errorf("note %q", n)
	}
	if n := scaledNote("rate", 0.8, 1000); n != "rate: 800 rps instead of Knative's 1000 (×0.8)" {
		t.Errorf("note %q", n)
	}
	var got []float64
	for _, st := range s.Steps() {
		got = append(got, st.RPS)
	}
	if len(got) != 3 || got[0] != 333 || got[1] != 667 || got[2] != 1000 {
		t.Errorf("rates %v", got)
	}
	if s.Steps()[2].From != 240 || s.Steps()[2].To != 360 || !s.FromZero {
		t.Errorf("steps %+v", s.Steps())
	}
	if len(s.Scaled) != 1 || !strings.Contains(s.Scaled[0], "333 → 667 → 1000 rps instead of Knative's 1000 → 2000 → 3000") {
		t.Errorf("scaled %q", s.Scaled)
	}
	if s.expected() != 120*(333+667+1000) {
		t.Errorf("expected %d", s.expected())
	}
}

func TestRolloutShape(t *testing.T) {
	s := rolloutShape(defaultKnative())
	sp := &jobspec.Spec{Autoscaling: revmeta.DefaultAutoscaling()}
	s.Tune(sp)
	if a := sp.Autoscaling; a.Min != 5 || a.Max != 10 || a.Initial != 5 || a.Target != 30 || a.TargetBurstCapacity != -1 || sp.Concurrency != 30 {
		t.Errorf("tuned to %+v, concurrency %d", a, sp.Concurrency)
	}
	next := *sp
	s.Update(&next)
	if next.Autoscaling.Min != 1 || sp.Autoscaling.Min != 5 || next.TemplateHash() == sp.TemplateHash() {
		t.Errorf("update: min %d (was %d); a new template: %v", next.Autoscaling.Min, sp.Autoscaling.Min, next.TemplateHash() != sp.TemplateHash())
	}
	if err := next.Autoscaling.Validate(); err != nil {
		t.Error(err)
	}
	if s.UpdateAt != 30*time.Second || s.HasDirect() || len(s.Scaled) != 1 {
		t.Errorf("update at %s, direct %v, scaled %q", s.UpdateAt, s.HasDirect(), s.Scaled)
	}
	if _, err := knativeShape("nope", defaultKnative()); err == nil {
		t.Error("an unknown shape was accepted")
	}
}

func TestGates(t *testing.T) {
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	k := defaultKnative()
	k.DirectD, k.Dataplane = 10*time.Second, 20*time.Second
	dp := dataplaneShape(k)
	in := gateInput{Expected: dp.expected(), Seconds: 30,
		Direct:  loadgen.Totals{Offered: 10000, OK: 10000, P95: ms(102), Max: ms(130)},
		Gateway: loadgen.Totals{Offered: 20000, Shed: 5, OK: 19995, P95: ms(108.4), Max: ms(400)}}
	gs := dp.gates(in)
	want := map[string]bool{"p95 latency (direct, baseline)": true, "p95 latency (gateway)": true, "errors": false, "requests sent": true}
	if len(gs) != len(want) {
		t.Fatalf("gates %+v", gs)
	}
	for _, g := range gs {
		if w, ok := want[g.Name]; !ok || g.Met != w {
			t.Errorf("%s: met %v (%s against %s)", g.Name, g.Met, g.Measured, g.Target)
		}
	}
	// The requests sent may fall 0.1 % short, no more; p95 has a floor as well as a ceiling.
	in.Gateway.Shed, in.Gateway.OK = 31, 19969
	in.Direct.P95 = ms(99)
	for _, g := range dp.gates(in) {
		if g.Name == "requests sent" && (g.Met || g.Target != "≥ 29970 (30000 − 0.1 %)" || g.Measured != "29969") {
			t.Errorf("requests: %+v", g)
		}
		if g.Name == "p95 latency (direct, baseline)" && (g.Met || g.Target != "100–105 ms") {
			t.Errorf("direct p95 99 ms: %+v", g)
		}
	}

	lt := loadTestShape(defaultKnative())
	gs = lt.gates(gateInput{Expected: lt.expected(), Seconds: 360,
		Gateway: loadgen.Totals{Offered: lt.expected(), OK: lt.expected(), P95: ms(114), Max: 11 * time.Second}})
	got := map[string]bool{}
	for _, g := range gs {
		got[g.Name] = g.Met
	}
	if !got["p95 latency (gateway)"] || got["max latency"] || !got["errors"] || !got["requests sent"] || len(gs) != 4 {
		t.Errorf("load-test gates %+v", gs)
	}

	k = defaultKnative()
	k.LoadScale = 1
	lt = loadTestShape(k)
	if len(lt.Scaled) != 0 {
		t.Errorf("unscaled load-test says %q", lt.Scaled)
	}
	ro := rolloutShape(defaultKnative())
	gs = ro.gates(gateInput{Expected: ro.expected(), Seconds: 180,
		Gateway: loadgen.Totals{Offered: 180000, Errors: 2, OK: 179998, P95: ms(111), Codes: map[int]int{503: 2}}})
	got = map[string]bool{}
	for _, g := range gs {
		got[g.Name] = g.Met
	}
	if got["p95 latency (gateway)"] || got["errors"] || !got["rate"] || len(gs) != 3 {
		t.Errorf("rollout gates %+v", gs)
	}
	table := gateTable(gs)
	for _, w := range []string{"| rollout-probe | p95 latency (gateway) | 100–110 ms | 111.0 ms | **no** |", "| rollout-probe | rate | 1000/s ± 1 % | 1000.0/s | yes |"} {
		if !strings.Contains(table, w) {
			t.Errorf("table lacks %q:\n%s", w, table)
		}
	}
}

func TestRoundRobin(t *testing.T) {
	rr := &roundRobin{urls: []string{"a", "b", "c"}}
	var got []string
	for i := 0; i < 5; i++ {
		got = append(got, rr.next())
	}
	if strings.Join(got, "") != "abcab" {
		t.Errorf("got %v", got)
	}
}
