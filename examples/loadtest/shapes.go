package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
	"github.com/rouse-run/rouse/jobspec"
)

// The shapes of Knative Serving's performance benchmarks (knative/serving
// test/performance/benchmarks), as this program runs them. Each is a list of phases of
// constant rate, the settings of the revision under test (Knative's setup YAML), and for
// the rollout probe a change applied mid-run.
const (
	shapeLoadTest  = "load-test"
	shapeDataplane = "dataplane-probe"
	shapeRollout   = "rollout-probe"
	shapeKnative   = "knative" // the three above, one after the other, then the table
)

// knativeOrder is the order `-shape knative` runs the shapes in.
func knativeOrder() []string { return []string{shapeDataplane, shapeLoadTest, shapeRollout} }

// phase is a span of constant offered rate on one path.
type phase struct {
	Label  string // e.g. "direct 1000 rps"
	RPS    float64
	D      time.Duration
	Direct bool // straight to the instances (Knative's "deployment" baseline), not through the gateway
}

// shape is one benchmark: what load, against what, and what it must meet.
type shape struct {
	Name   string
	Phases []phase
	// Cooldown is recorded after the last phase, with no load.
	Cooldown time.Duration
	// FromZero: the revision is at zero instances when the load starts (load-test).
	FromZero bool
	// Ready is how many instances the gateway must route to before the load starts
	// (Knative's ProbeTargetTillReady on a minScale revision); 0 = do not wait.
	Ready int
	// Tune sets the revision's settings from Knative's setup YAML; Update is the change a
	// rollout applies UpdateAt into the run (nil = none).
	Tune     func(*jobspec.Spec)
	Update   func(*jobspec.Spec)
	UpdateAt time.Duration
	// P95Min and P95Max bound the p95 of the gateway path (Knative's SLA 1: "p95 in
	// 100–110 ms"), DirectP95Max the direct baseline's.
	P95Min, P95Max, DirectP95Max time.Duration
	// MaxLatency (0 = no gate) bounds the slowest answer (load-test's SLA 2).
	MaxLatency time.Duration
	// RequestsTolerance is the fraction by which the requests sent may fall short of
	// rate × duration (Knative's SLA "total requests", 0.1 %); RateTolerance the fraction
	// by which the rate achieved may differ (rollout-probe's 1 %). 0 = no gate.
	RequestsTolerance, RateTolerance float64
	// Scaled says what differs from Knative's shape and why (one line each), for the report.
	Scaled []string
}

// Duration is the whole recorded run: every phase, then the cooldown.
func (s shape) Duration() time.Duration {
	var d time.Duration
	for _, p := range s.Phases {
		d += p.D
	}
	return d + s.Cooldown
}

// Rate is the offered rate of the path (direct or through the gateway) over the run: each
// phase's rate during it when the phase is on that path, else 0.
func (s shape) Rate(direct bool) loadgen.Rate {
	phases := append([]phase(nil), s.Phases...)
	return func(el time.Duration) float64 {
		var at time.Duration
		for _, p := range phases {
			if el >= at && el < at+p.D {
				if p.Direct == direct {
					return p.RPS
				}
				return 0
			}
			at += p.D
		}
		return 0
	}
}

// Target is the rate the schedule asks for at el on either path.
func (s shape) Target(el time.Duration) float64 {
	return s.Rate(false)(el) + s.Rate(true)(el)
}

// HasDirect says whether a phase goes straight to the instances.
func (s shape) HasDirect() bool {
	for _, p := range s.Phases {
		if p.Direct {
			return true
		}
	}
	return false
}

// Steps are the phases as spans of whole seconds since the start.
func (s shape) Steps() []step {
	var out []step
	from := 0
	for _, p := range s.Phases {
		to := from + int(p.D/time.Second)
		out = append(out, step{RPS: p.RPS, From: from, To: to, Label: p.Label, Direct: p.Direct})
		from = to
	}
	return out
}

// span is the seconds [from, to) the phases on the path cover: they are contiguous in
// every shape. (0, 0) when no phase is on it.
func (s shape) span(direct bool) (from, to int) {
	found := false
	for _, st := range s.Steps() {
		if st.Direct != direct {
			continue
		}
		if !found {
			from, found = st.From, true
		}
		to = st.To
	}
	return from, to
}

// knativeOptions are the knobs of the Knative shapes: Knative's values, scaled by Scale
// (rates) where the machine cannot offer them.
type knativeOptions struct {
	// LoadScale multiplies load-test's rates (1 000 → 2 000 → 3 000), Scale the other
	// shapes' 1 000 rps.
	Scale, LoadScale float64
	// Dataplane is the gateway path's duration, DirectD the direct baseline's.
	Dataplane, DirectD time.Duration
	LoadStep           time.Duration // each of load-test's three steps (Knative: 2 min)
	Rollout            time.Duration // rollout-probe's duration (Knative's CI job: 3 min)
	UpdateAt           time.Duration // when rollout-probe applies the change (Knative: 30 s)
	Instances          int           // dataplane-probe's min = max scale (Knative: 5)
	RolloutMin         int           // rollout-probe's min scale before the change (Knative: 50)
	RolloutMax         int           // its max scale (Knative: 100)
	Cooldown           time.Duration
}

// defaultKnative is Knative's shapes with this machine's scaling (docs/benchmarks.md says
// why each value differs): the generator, the gateway and the instances share 2 CPUs,
// which offer 1 000 rps of ?sleep=100 within the SLA but not 2 000 (measured: p95 216 ms
// straight to the instances), so load-test's 1 000 → 2 000 → 3 000 is divided by 3.
func defaultKnative() knativeOptions {
	return knativeOptions{Scale: 1, LoadScale: 1.0 / 3, Dataplane: 5 * time.Minute, DirectD: time.Minute,
		LoadStep: 2 * time.Minute, Rollout: 3 * time.Minute, UpdateAt: 30 * time.Second,
		Instances: 5, RolloutMin: 5, RolloutMax: 10, Cooldown: 10 * time.Second}
}

func rps(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// scaledNote says how a rate differs from Knative's, "" when it does not.
func scaledNote(what string, scale float64, knative ...float64) string {
	if scale == 1 {
		return ""
	}
	ours := make([]string, len(knative))
	theirs := make([]string, len(knative))
	for i, k := range knative {
		ours[i], theirs[i] = rps(math.Round(k*scale)), rps(k)
	}
	factor := fmt.Sprintf("×%g", scale)
	if inv := 1 / scale; inv > 1 && math.Abs(inv-math.Round(inv)) < 1e-3 {
		factor = fmt.Sprintf("÷%g", math.Round(inv))
	}
	return fmt.Sprintf("%s: %s rps instead of Knative's %s (%s)", what, strings.Join(ours, " → "), strings.Join(theirs, " → "), factor)
}

// dataplaneShape is dataplane-probe: 1 000 rps for the duration against a revision pinned
// at 5 instances (min = max = 5, containerConcurrency 0), p95 within 100–110 ms through
// Knative (105 ms for the plain Deployment, the environment canary), and the requests
// sent within 0.1 % of rate × duration.
func dataplaneShape(k knativeOptions) shape {
	r := math.Round(1000 * k.Scale)
	n := k.Instances
	s := shape{Name: shapeDataplane, Ready: n,
		Phases: []phase{
			{Label: "direct " + rps(r) + " rps", RPS: r, D: k.DirectD, Direct: true},
			{Label: "gateway " + rps(r) + " rps", RPS: r, D: k.Dataplane},
		},
		Cooldown: k.Cooldown,
		Tune: func(sp *jobspec.Spec) {
			sp.Concurrency = 0
			sp.Autoscaling.Min, sp.Autoscaling.Max, sp.Autoscaling.Initial = n, n, n
		},
		P95Min: 100 * time.Millisecond, P95Max: 110 * time.Millisecond, DirectP95Max: 105 * time.Millisecond,
		RequestsTolerance: 0.001,
	}
	if note := scaledNote("rate", k.Scale, 1000); note != "" {
		s.Scaled = append(s.Scaled, note)
	}
	if n != 5 {
		s.Scaled = append(s.Scaled, fmt.Sprintf("instances: %d instead of Knative's 5", n))
	}
	return s
}

// loadTestShape is load-test: from zero, 1 000 → 2 000 → 3 000 rps in 2-minute steps,
// against a revision with Knative's default autoscaling (concurrency target 100,
// containerConcurrency 0); p95 within 100–115 ms and the slowest answer ≤ 10 s over the
// whole run, no error, and the requests sent at least rate × duration − 0.1 %.
func loadTestShape(k knativeOptions) shape {
	s := shape{Name: shapeLoadTest, FromZero: true, Cooldown: k.Cooldown,
		Tune: func(sp *jobspec.Spec) {
			sp.Concurrency = 0
			sp.Autoscaling.Target = 100 // Knative's container-concurrency-target-default
		},
		P95Min: 100 * time.Millisecond, P95Max: 115 * time.Millisecond, MaxLatency: 10 * time.Second,
		RequestsTolerance: 0.001,
	}
	for _, r := range []float64{1000, 2000, 3000} {
		r = math.Round(r * k.LoadScale)
		s.Phases = append(s.Phases, phase{Label: rps(r) + " rps", RPS: r, D: k.LoadStep})
	}
	if note := scaledNote("rates", k.LoadScale, 1000, 2000, 3000); note != "" {
		s.Scaled = append(s.Scaled, note)
	}
	return s
}

// benchLoadShape is `make bench-load`'s own run: the load-test shape at the given rates
// against examples/autoscale as written (concurrency target 10).
func benchLoadShape(step time.Duration, rates []float64, cooldown time.Duration) shape {
	s := shape{Name: shapeLoadTest, FromZero: true, Cooldown: cooldown,
		P95Min: 100 * time.Millisecond, P95Max: SLA, MaxLatency: 10 * time.Second, RequestsTolerance: 0.001}
	for _, r := range rates {
		s.Phases = append(s.Phases, phase{Label: rps(r) + " rps", RPS: r, D: step})
	}
	return s
}

// rolloutShape is rollout-probe (its activator-with-cc flavour): 1 000 rps for the
// duration against a revision with containerConcurrency 30, min scale 50 (max 100) and
// target burst capacity -1; 30 s in, the service is updated
// (min scale → 1: "something irrelevant to trigger a rollout"), so a new revision takes
// the traffic mid-run. p95 within 100–110 ms and the rate achieved within 1 %; the brief
// adds no errors.
func rolloutShape(k knativeOptions) shape {
	r := math.Round(1000 * k.Scale)
	lo, hi := k.RolloutMin, k.RolloutMax
	s := shape{Name: shapeRollout, Ready: lo, Cooldown: k.Cooldown,
		Phases: []phase{{Label: "gateway " + rps(r) + " rps, rollout at " + k.UpdateAt.String(), RPS: r, D: k.Rollout}},
		Tune: func(sp *jobspec.Spec) {
			sp.Concurrency = 30
			sp.Autoscaling.Target = 30 // Knative's target is capped by containerConcurrency
			// rouse has no rollout-duration (Knative shifts the traffic over 240 s): the new
			// revision starts at the old one's size instead, so the route's switch finds
			// room for the load.
			sp.Autoscaling.Min, sp.Autoscaling.Max, sp.Autoscaling.Initial = lo, hi, lo
			// targetBurstCapacity -1 ("always hook the activator in"): requests over the
			// instances' 30 slots wait in the gateway (up to its MaxHeld) rather than being
			// answered 503 beyond a burst capacity of 200.
			sp.Autoscaling.TargetBurstCapacity = -1
		},
		Update:   func(sp *jobspec.Spec) { sp.Autoscaling.Min = 1 },
		UpdateAt: k.UpdateAt,
		P95Min:   100 * time.Millisecond, P95Max: 110 * time.Millisecond, RateTolerance: 0.01,
	}
	if note := scaledNote("rate", k.Scale, 1000); note != "" {
		s.Scaled = append(s.Scaled, note)
	}
	if lo != 50 || hi != 100 {
		s.Scaled = append(s.Scaled, fmt.Sprintf("instances: min %d, max %d instead of Knative's 50, 100", lo, hi))
	}
	return s
}

// knativeShape is the named Knative shape.
func knativeShape(name string, k knativeOptions) (shape, error) {
	switch name {
	case shapeDataplane:
		return dataplaneShape(k), nil
	case shapeLoadTest:
		return loadTestShape(k), nil
	case shapeRollout:
		return rolloutShape(k), nil
	}
	return shape{}, fmt.Errorf("unknown shape %q (want %s, %s, %s or %s)", name, shapeDataplane, shapeLoadTest, shapeRollout, shapeKnative)
}

// gate is one of Knative's SLA checks on one run.
type gate struct {
	Shape    string
	Name     string // "p95 latency (gateway)"
	Target   string // "100–110 ms"
	Measured string
	Met      bool
}

// gateInput is what a run measured, for the gates.
type gateInput struct {
	Gateway, Direct loadgen.Totals // the phases on each path (Direct empty without a direct phase)
	Expected        int            // requests rate × duration over the load phases
	Seconds         float64        // the load phases' length
}

// gates evaluates the shape's SLA on what the run measured. Pure.
func (s shape) gates(in gateInput) []gate {
	var out []gate
	add := func(name, target, measured string, met bool) {
		out = append(out, gate{Shape: s.Name, Name: name, Target: target, Measured: measured, Met: met})
	}
	p95 := func(path string, t loadgen.Totals, hi time.Duration) {
		add("p95 latency ("+path+")", fmt.Sprintf("%s–%s ms", msInt(s.P95Min), msInt(hi)), ms(t.P95)+" ms",
			t.OK > 0 && t.P95 >= s.P95Min && t.P95 <= hi)
	}
	all := in.Gateway
	if s.HasDirect() {
		p95("direct, baseline", in.Direct, s.DirectP95Max)
		all = sumTotals(in.Gateway, in.Direct)
	}
	p95("gateway", in.Gateway, s.P95Max)
	if s.MaxLatency > 0 {
		add("max latency", "≤ "+s.MaxLatency.String(), ms(all.Max)+" ms", all.OK > 0 && all.Max <= s.MaxLatency)
	}
	add("errors", "0", fmt.Sprintf("%d (+%d shed)", all.Errors, all.Shed), all.Failures() == 0)
	sent := all.Offered - all.Shed
	if s.RequestsTolerance > 0 {
		low := in.Expected - int(float64(in.Expected)*s.RequestsTolerance)
		add("requests sent", fmt.Sprintf("≥ %d (%d − %g %%)", low, in.Expected, s.RequestsTolerance*100),
			strconv.Itoa(sent), sent >= low)
	}
	if s.RateTolerance > 0 && in.Seconds > 0 {
		want := float64(in.Expected) / in.Seconds
		got := float64(sent) / in.Seconds
		add("rate", fmt.Sprintf("%s/s ± %g %%", rps(want), s.RateTolerance*100), strconv.FormatFloat(got, 'f', 1, 64)+"/s",
			math.Abs(got-want) <= want*s.RateTolerance)
	}
	return out
}

// expected is rate × duration summed over the phases.
func (s shape) expected() int {
	e := 0.0
	for _, p := range s.Phases {
		e += p.RPS * p.D.Seconds()
	}
	return int(math.Round(e))
}

func sumTotals(a, b loadgen.Totals) loadgen.Totals {
	t := loadgen.Totals{Offered: a.Offered + b.Offered, Shed: a.Shed + b.Shed, OK: a.OK + b.OK, Errors: a.Errors + b.Errors,
		Aborted: a.Aborted + b.Aborted, Transport: a.Transport + b.Transport, Codes: map[int]int{}, Max: max(a.Max, b.Max)}
	for _, m := range []map[int]int{a.Codes, b.Codes} {
		for c, n := range m {
			t.Codes[c] += n
		}
	}
	return t
}

func msInt(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// gateTable is the table `-shape knative` prints: one line per gate.
func gateTable(gs []gate) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| benchmark | gate | target | measured | met? |\n|---|---|---|---|---|\n")
	for _, g := range gs {
		met := "yes"
		if !g.Met {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", g.Shape, g.Name, g.Target, g.Measured, met)
	}
	return b.String()
}
