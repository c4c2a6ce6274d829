// Package wake is `make bench-wake`: N services at zero, one request each at once, through
// a real gateway and scaler on a real Consul + Nomad pair (internal/harness/testcluster),
// and where each wake's time went — the gateway's and scaler's own log timestamps, Nomad's
// evaluation, allocation and task-event times, and Consul's registration and check as a
// blocking query of it saw them. The run is wake_test.go's BenchmarkParallelWake; this
// file turns the timestamps into the tables it prints.
package wake

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
)

// Stage is one step of a wake, in the order a wake passes them.
type Stage int

// The stages: each is a moment of one revision's wake (a zero Time: not seen).
const (
	Activated   Stage = iota // the scaler logged "activating" (it read the gateway's /activations)
	EvalCreated              // Nomad created the scaling evaluation (inside Jobs.Scale)
	Scaled                   // Jobs.Scale returned (the scaler logged "scaled")
	Placed                   // the scheduler's plan placed the allocation (alloc CreateTime)
	EvalDone                 // the evaluation completed
	Received                 // the client's alloc runner took it (task event Received)
	TaskSetup                // task event "Task Setup": the task's dir and hooks begin
	Started                  // task event Started: the driver started the process
	Registered               // the instance appeared in Consul's catalog
	Probed                   // the gateway's first good probe of it
	Passing                  // Consul's own check passed
	Answered                 // the response reached the client
	NumStages
)

var stageNames = [NumStages]string{
	"activation seen by scaler", "evaluation created", "Jobs.Scale returned", "alloc placed (plan applied)",
	"evaluation complete", "alloc received by client", "task setup", "task started",
	"Consul registration seen", "first good gateway probe", "Consul check passing", "response",
}

func (s Stage) String() string { return stageNames[s] }

// Wake is one revision's wake: when its request went out, and when each stage happened.
type Wake struct {
	Revision string
	Sent     time.Time
	Code     int    // HTTP status (0: no answer)
	Err      string // transport error
	At       [NumStages]time.Time
}

// Summary is one round: N wakes at once.
type Summary struct {
	N, OK              int
	P50, P95, Max      time.Duration // request → response, at the client, over every request
	Stages             [NumStages]StageSummary
	RequestsInFlight   time.Duration // first request sent → last answered
	ScaleCallsInFlight time.Duration // first activation seen → last Jobs.Scale returned
}

// StageSummary is one stage over the round: medians and p95 since the request went out,
// and the median of the time from the previous stage that was seen, per wake.
type StageSummary struct {
	Seen               int
	Since50, Since95   time.Duration // request sent → this stage
	FromPrev50, Prev95 time.Duration // the stage before (per wake) → this stage
}

// Summarize computes a round's figures.
func Summarize(ws []Wake) Summary {
	s := Summary{N: len(ws)}
	var lat []time.Duration
	var first, last, firstAct, lastScale time.Time
	for _, w := range ws {
		if w.Code == 200 {
			s.OK++
		}
		if !w.At[Answered].IsZero() {
			lat = append(lat, w.At[Answered].Sub(w.Sent))
		}
		first, last = earliest(first, w.Sent), latest(last, w.At[Answered])
		firstAct, lastScale = earliest(firstAct, w.At[Activated]), latest(lastScale, w.At[Scaled])
	}
	s.P50, s.P95, s.Max = pct(lat, 50), pct(lat, 95), pct(lat, 100)
	if !last.IsZero() {
		s.RequestsInFlight = last.Sub(first)
	}
	if !lastScale.IsZero() && !firstAct.IsZero() {
		s.ScaleCallsInFlight = lastScale.Sub(firstAct)
	}
	for st := Stage(0); st < NumStages; st++ {
		var since, prev []time.Duration
		for _, w := range ws {
			t := w.At[st]
			if t.IsZero() {
				continue
			}
			since = append(since, t.Sub(w.Sent))
			p := w.Sent
			for q := st - 1; q >= 0; q-- {
				if !w.At[q].IsZero() {
					p = w.At[q]
					break
				}
			}
			prev = append(prev, t.Sub(p))
		}
		s.Stages[st] = StageSummary{Seen: len(since), Since50: pct(since, 50), Since95: pct(since, 95),
			FromPrev50: pct(prev, 50), Prev95: pct(prev, 95)}
	}
	return s
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// pct is the nearest-rank percentile (p = 100: the maximum).
func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return loadgen.Percentile(s, p)
}

// Print writes a round's figures as Markdown tables.
func (s Summary) Print(w io.Writer, title string) {
	fmt.Fprintf(w, "\n### %s\n\n", title)
	fmt.Fprintf(w, "%d requests, %d × 200: request → response p50 %s, p95 %s, max %s (first sent → last answered %s; first activation → last Jobs.Scale returned %s)\n\n",
		s.N, s.OK, ms(s.P50), ms(s.P95), ms(s.Max), ms(s.RequestsInFlight), ms(s.ScaleCallsInFlight))
	fmt.Fprintln(w, "| stage | seen | since request p50 | p95 | from previous stage p50 | p95 |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for st := Stage(0); st < NumStages; st++ {
		x := s.Stages[st]
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s |\n", st, x.Seen, ms(x.Since50), ms(x.Since95), ms(x.FromPrev50), ms(x.Prev95))
	}
}

// Medians is the median, over rounds, of each round's p50, p95 and max.
func Medians(rounds []Summary) (p50, p95, maxd time.Duration) {
	var a, b, c []time.Duration
	for _, r := range rounds {
		a, b, c = append(a, r.P50), append(b, r.P95), append(c, r.Max)
	}
	return pct(a, 50), pct(b, 50), pct(c, 50)
}

func ms(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}
