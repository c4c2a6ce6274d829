package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
)

// SLA is Knative's load-test latency objective for ?sleep=100: p95 ≤ 115 ms.
const SLA = 115 * time.Millisecond

// wakeSecs is how much of the first step the wake from zero is taken to last: the summary
// also reports that step without it, so the cost of the cold start and the steady state
// are both visible.
const wakeSecs = 5

// row is one second of the run: the load side from the recorder, the instances from Nomad.
type row struct {
	loadgen.Second
	Target         float64 // the rate the schedule asked for
	Desired, Ready int     // Nomad group count and running allocations; -1 = not sampled
	// NewDesired and NewReady are the rollout's new revision's (-1 = none or not sampled).
	NewDesired, NewReady int
}

// step is one plateau of the ramp, in seconds since the start.
type step struct {
	RPS      float64
	From, To int    // [From, To)
	Label    string // "" = "<RPS> rps"
	Direct   bool   // sent straight to the instances, not through the gateway
}

func (s step) label() string {
	if s.Label != "" {
		return s.Label
	}
	return fmt.Sprintf("%g rps", s.RPS)
}

// event is a moment of the run marked on the plot (the rollout's apply).
type event struct {
	At    float64 // seconds since the start
	Label string
}

// stepStats summarise one step.
type stepStats struct {
	step
	loadgen.Totals
	MaxDesired, MaxReady int
}

// report is everything the run measured.
type report struct {
	Title string
	Load  string // what was offered, one line
	Rows  []row
	Steps []step
	Stats []stepStats
	// AfterWake is the first step without its first wakeSecs seconds.
	AfterWake loadgen.Totals
	All       loadgen.Totals
	Errors    map[string]int // distinct error texts
	// ColdStart is the longest wait for the wake from zero the gateway reported (its
	// X-Rouse-Cold-Start header): what the first request waited. ColdRequests waited at all.
	ColdStart    time.Duration
	ColdRequests int
	Started      time.Time
	Notes        []string
	// SLA is the p95 ceiling drawn on the plot (0 = the SLA constant); Gates are the
	// shape's Knative SLA checks; Scaled says what differs from Knative's shape.
	SLA    time.Duration
	Gates  []gate
	Scaled []string
	// Events are marked on the plot; NewRevision is the rollout's new revision ("" = none).
	Events      []event
	NewRevision string
	// NoStepVerdict leaves out bench-load's per-step verdict (the shapes whose gates are
	// over the whole run, and whose steps are not a ramp).
	NoStepVerdict bool
}

func (r *report) sla() time.Duration {
	if r.SLA > 0 {
		return r.SLA
	}
	return SLA
}

func (r *report) maxInstances() (desired, ready int) {
	for _, x := range r.Rows {
		desired, ready = max(desired, x.Desired), max(ready, x.Ready)
	}
	return desired, ready
}

// pass says whether the run met the targets: no error and every step's p95 within the SLA.
func (r *report) pass() bool {
	if r.All.Failures() > 0 {
		return false
	}
	for _, s := range r.Stats {
		if s.P95 > r.sla() {
			return false
		}
	}
	return true
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

// writeCSV writes one line per second; withNew adds the rollout's new revision's instances.
func writeCSV(w io.Writer, rows []row, withNew bool) error {
	cw := csv.NewWriter(w)
	head := []string{"t_s", "target_rps", "offered", "achieved_rps", "ok", "errors", "shed",
		"p50_ms", "p95_ms", "p99_ms", "max_ms", "desired_instances", "ready_instances"}
	if withNew {
		head = append(head, "new_desired_instances", "new_ready_instances")
	}
	_ = cw.Write(head)
	for _, x := range rows {
		rec := []string{
			strconv.Itoa(x.T), strconv.FormatFloat(x.Target, 'f', -1, 64), strconv.Itoa(x.Offered),
			strconv.Itoa(x.Achieved), strconv.Itoa(x.OK), strconv.Itoa(x.Errors), strconv.Itoa(x.Shed),
			ms(x.P50), ms(x.P95), ms(x.P99), ms(x.Max), strconv.Itoa(x.Desired), strconv.Itoa(x.Ready),
		}
		if withNew {
			rec = append(rec, strconv.Itoa(x.NewDesired), strconv.Itoa(x.NewReady))
		}
		_ = cw.Write(rec)
	}
	cw.Flush()
	return cw.Error()
}

// writeSummary writes the text a person reads first.
func writeSummary(w io.Writer, r *report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n", r.Title, r.Load)
	fmt.Fprintf(&b, "run started %s, %d s recorded\n\n", r.Started.UTC().Format(time.RFC3339), len(r.Rows))
	lw := 10 // the step column fits the longest label
	for _, s := range r.Stats {
		lw = max(lw, len([]rune(s.label())))
	}
	fmt.Fprintf(&b, "%-*s %8s %8s %7s %6s %9s %9s %9s %9s %8s %6s\n", lw,
		"step", "seconds", "sent", "errors", "shed", "p50 ms", "p95 ms", "p99 ms", "max ms", "desired", "ready")
	for _, s := range r.Stats {
		fmt.Fprintf(&b, "%-*s %8d %8d %7d %6d %9s %9s %9s %9s %8d %6d\n", lw,
			s.label(), s.To-s.From, s.Offered-s.Shed, s.Errors, s.Shed,
			ms(s.P50), ms(s.P95), ms(s.P99), ms(s.Max), s.MaxDesired, s.MaxReady)
	}
	if len(r.Stats) > 0 && r.AfterWake.OK > 0 {
		s, w := r.Stats[0], r.AfterWake
		fmt.Fprintf(&b, "%-*s %8d %8d %7d %6d %9s %9s %9s %9s\n", lw, fmt.Sprintf("%g, >%ds", s.RPS, wakeSecs), s.To-s.From-wakeSecs,
			w.Offered-w.Shed, w.Errors, w.Shed, ms(w.P50), ms(w.P95), ms(w.P99), ms(w.Max))
	}
	a := r.All
	fmt.Fprintf(&b, "%-*s %8d %8d %7d %6d %9s %9s %9s %9s\n\n", lw, "all", len(r.Rows), a.Offered-a.Shed, a.Errors, a.Shed,
		ms(a.P50), ms(a.P95), ms(a.P99), ms(a.Max))
	d, rd := r.maxInstances()
	fmt.Fprintf(&b, "max instances: %d desired, %d ready\n", d, rd)
	if r.NewRevision != "" {
		nd, nr := 0, 0
		for _, x := range r.Rows {
			nd, nr = max(nd, x.NewDesired), max(nr, x.NewReady)
		}
		fmt.Fprintf(&b, "new revision %s: max %d desired, %d ready\n", r.NewRevision, nd, nr)
	}
	if r.ColdRequests > 0 {
		fmt.Fprintf(&b, "cold start from zero: %d request(s) held while the first instances started, the first for %s ms\n", r.ColdRequests, ms(r.ColdStart))
	}
	fmt.Fprintf(&b, "errors: %d (non-2xx %s, no answer %d), shed by the generator: %d, cut off at the end: %d\n",
		a.Errors, codes(a.Codes), a.Transport, a.Shed, a.Aborted)
	if len(r.Errors) > 0 {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  %6d × %s\n", r.Errors[k], k)
		}
	}
	if len(r.Gates) > 0 {
		fmt.Fprintf(&b, "Knative's SLA gates:\n")
		for _, g := range r.Gates {
			met := "met"
			if !g.Met {
				met = "MISSED"
			}
			fmt.Fprintf(&b, "  %-26s target %-28s measured %-22s %s\n", g.Name, g.Target, g.Measured, met)
		}
	}
	for _, sc := range r.Scaled {
		fmt.Fprintf(&b, "scaled from Knative's shape: %s\n", sc)
	}
	for _, e := range r.Events {
		fmt.Fprintf(&b, "event at %.1f s: %s\n", e.At, e.Label)
	}
	if !r.NoStepVerdict {
		verdict := "PASS"
		if !r.pass() {
			verdict = "MISS"
		}
		fmt.Fprintf(&b, "target: 0 errors and p95 ≤ %s ms in every step: %s\n", ms(r.sla()), verdict)
		if verdict == "MISS" && r.All.Failures() == 0 && len(r.Stats) > 0 && r.AfterWake.OK > 0 && r.AfterWake.P95 <= r.sla() {
			missed := 0
			for _, s := range r.Stats[1:] {
				if s.P95 > r.sla() {
					missed++
				}
			}
			if missed == 0 {
				fmt.Fprintf(&b, "  (missed only in the first step's wake from zero: without its first %d s, p95 is %s ms)\n", wakeSecs, ms(r.AfterWake.P95))
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func codes(m map[int]int) string {
	if len(m) == 0 {
		return "none"
	}
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%d×%d", m[k], k)
	}
	return strings.Join(parts, " ")
}
