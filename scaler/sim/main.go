// Command sim replays traffic traces through rouse's autoscaling maths (scaler/kpa) and a
// model of instances, like Knative's Skenario, and prints what the decisions cost:
// instance-seconds paid for, over- and under-provisioning against an ideal scaler, and the
// requests that had to wait for a free instance.
//
//	go run ./scaler/sim            # the table for the README
//	go run ./scaler/sim -trace spike -v
//
// The model, stepped in 1 ms: requests arrive (Poisson, fixed seed) and each takes a fixed
// service time; an instance serves up to `-capacity` at once; a request with no free slot
// waits in the gateway. The scaler samples in-flight + waiting every tick, decides with
// kpa, and new instances are ready `-start` (150 ms, measured on Nomad) after being asked
// for. From zero, the gateway's activation signal reaches the scaler after `-activate`.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/scaler/kpa"
)

// Trace is a named request rate over time.
type Trace struct {
	Name     string
	Duration time.Duration
	Start    int // instances running at t=0
	RPS      func(t time.Duration) float64
}

// Traces are the four shapes the README reports on.
func Traces() []Trace {
	return []Trace{
		{"steady", 10 * time.Minute, 3, func(time.Duration) float64 { return 1000 }},
		{"ramp", 10 * time.Minute, 1, func(t time.Duration) float64 {
			return 3000 * math.Min(1, t.Minutes()/5) // 0 → 3000 rps over 5 min, then flat
		}},
		{"spike", 10 * time.Minute, 1, func(t time.Duration) float64 {
			if t >= 3*time.Minute && t < 3*time.Minute+30*time.Second {
				return 3000 // ×10 for 30 s
			}
			return 300
		}},
		{"idle", 10 * time.Minute, 0, func(t time.Duration) float64 {
			// Short bursts separated by minutes of nothing: scale to zero and back.
			switch s := t.Seconds(); {
			case s < 20, s >= 200 && s < 205, s >= 450 && s < 470:
				return 50
			}
			return 0
		}},
	}
}

// Model is the world around the maths.
type Model struct {
	Service  time.Duration // per request
	Capacity int           // concurrent requests per instance
	Start    time.Duration // asked for → ready
	Activate time.Duration // first held request → scaler acts (activation path)
	Tick     time.Duration
	Seed     uint64
	Log      io.Writer // when set, one line per tick
}

// DefaultModel is what the README table uses.
func DefaultModel() Model {
	return Model{Service: 200 * time.Millisecond, Capacity: 100, Start: 150 * time.Millisecond,
		Activate: 5 * time.Millisecond, Tick: 2 * time.Second, Seed: 1}
}

// Result is what one replay cost.
type Result struct {
	Trace, Config string
	Requests      int
	Waited        int     // requests that waited ≥ 1 ms for a slot
	WaitP99       float64 // ms, over all requests
	WaitMax       float64 // ms
	InstanceSec   float64 // paid for: asked-for instances × time
	OverSec       float64 // ready instances above the ideal, × time
	UnderSec      float64 // ideal instances not ready, × time
	Peak          int
	ScaleEvents   int
	ColdStarts    int // scale-ups from zero
}

type instance struct {
	readyAt  time.Duration
	inflight int
	draining bool
}

// Run replays one trace.
func Run(m Model, tr Trace, cfg revmeta.Config) Result {
	rng := rand.New(rand.NewPCG(m.Seed, 7))
	rev := kpa.New(cfg.Autoscaling, kpa.Options{Granularity: m.Tick})
	res := Result{Trace: tr.Name}
	const step = time.Millisecond
	ring := make([][]int, int(m.Service/step)+1) // completions by ms: instance index
	var (
		insts      []*instance
		queue      []time.Duration // arrival times of waiting requests
		waits      []float64
		count      = max(tr.Start, cfg.Min) // what Nomad was told
		activateAt = time.Duration(-1)
		nextTick   = time.Duration(0)
	)
	ready := func(now time.Duration) int {
		n := 0
		for _, in := range insts {
			if !in.draining && in.readyAt <= now {
				n++
			}
		}
		return n
	}
	scaleTo := func(now time.Duration, n int) {
		if n == count {
			return
		}
		res.ScaleEvents++
		if count == 0 {
			res.ColdStarts++
		}
		count = n
		live := 0
		for _, in := range insts {
			if !in.draining {
				live++
			}
		}
		for ; live < n; live++ {
			insts = append(insts, &instance{readyAt: now + m.Start})
		}
		// Scale down: drop instances still starting first, then the least busy.
		for live > n {
			best := -1
			for i, in := range insts {
				if in.draining {
					continue
				}
				if best < 0 || in.readyAt > now && insts[best].readyAt <= now ||
					(in.readyAt <= now) == (insts[best].readyAt <= now) && in.inflight < insts[best].inflight {
					best = i
				}
			}
			insts[best].draining = true
			live--
		}
		res.Peak = max(res.Peak, n)
	}
	for range count {
		insts = append(insts, &instance{}) // the initial instances are up at t=0
	}
	res.Peak = count
	for now := time.Duration(0); now < tr.Duration; now += step {
		slot := int(now/step) % len(ring)
		for _, i := range ring[slot] {
			insts[i].inflight--
		}
		ring[slot] = ring[slot][:0]
		insts = compact(insts, ring)

		for range poisson(rng, tr.RPS(now)*step.Seconds()) {
			queue = append(queue, now)
		}
		// Dispatch to the least busy ready instance with a free slot.
		for len(queue) > 0 {
			best := -1
			for i, in := range insts {
				if !in.draining && in.readyAt <= now && in.inflight < m.Capacity &&
					(best < 0 || in.inflight < insts[best].inflight) {
					best = i
				}
			}
			if best < 0 {
				break
			}
			insts[best].inflight++
			w := float64((now - queue[0]) / step)
			waits = append(waits, w)
			if w >= 1 {
				res.Waited++
			}
			queue = queue[1:]
			end := (int((now+m.Service)/step) % len(ring))
			ring[end] = append(ring[end], best)
		}
		// The activation path: held requests at zero wake the revision without a tick.
		if count == 0 && len(queue) > 0 && activateAt < 0 {
			activateAt = now + m.Activate
		}
		if activateAt >= 0 && now >= activateAt {
			activateAt = -1
			if count == 0 {
				scaleTo(now, rev.Activate(epoch.Add(now), int64(len(queue))))
			}
		}
		if now >= nextTick {
			nextTick += m.Tick
			inflight := 0
			for _, in := range insts {
				inflight += in.inflight
			}
			held := int64(0)
			if ready(now) == 0 {
				held = int64(len(queue))
			}
			rev.Record(epoch.Add(now), kpa.Sample{Concurrency: float64(inflight + len(queue)), Held: held,
				RPS: tr.RPS(now)})
			d := rev.Decide(epoch.Add(now), ready(now), count)
			if m.Log != nil {
				fmt.Fprintf(m.Log, "%6.0fs rps=%5.0f conc=%5d ready=%3d count=%3d → %3d %-10s panic=%v stable=%.0f panicv=%.0f\n",
					now.Seconds(), tr.RPS(now), inflight+len(queue), ready(now), count, d.Desired, d.Reason, d.Panic, d.Stable, d.PanicValue)
			}
			scaleTo(now, d.Desired)
		}
		// Accounting against an ideal scaler that has exactly the instances the demand
		// needs at the target, instantly.
		demand := tr.RPS(now) * m.Service.Seconds()
		ideal := math.Ceil(demand / (cfg.Target * cfg.TargetUtilization))
		r := float64(ready(now))
		res.OverSec += math.Max(0, r-ideal) * step.Seconds()
		res.UnderSec += math.Max(0, ideal-r) * step.Seconds()
		res.InstanceSec += float64(count) * step.Seconds()
	}
	res.Requests = len(waits) + len(queue)
	slices.Sort(waits)
	if len(waits) > 0 {
		res.WaitP99 = waits[len(waits)*99/100]
		res.WaitMax = waits[len(waits)-1]
	}
	return res
}

var epoch = time.Unix(1_700_000_000, 0)

// poisson draws from Poisson(mean) by Knuth's method: means here are a few per ms.
func poisson(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// compact drops drained idle instances; the completion ring holds indexes, so only the
// tail can go without renumbering.
func compact(insts []*instance, _ [][]int) []*instance {
	for len(insts) > 0 {
		in := insts[len(insts)-1]
		if !in.draining || in.inflight > 0 {
			break
		}
		insts = insts[:len(insts)-1]
	}
	return insts
}

// Variant is a named change to the defaults.
type Variant struct {
	Name string
	Mod  func(*revmeta.Config)
}

// Variants are the configs compared in the README table.
func Variants() []Variant {
	return []Variant{
		{"defaults", func(*revmeta.Config) {}},
		{"util 90%", func(c *revmeta.Config) { c.TargetUtilization = 0.9 }},
		{"window 20s", func(c *revmeta.Config) { c.Window = 20 * time.Second }},
	}
}

// Table runs every trace under every variant and writes a Markdown table.
func Table(w io.Writer, m Model, traces []Trace, variants []Variant) []Result {
	var out []Result
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, "| "+strings.Join(cells, "\t| ")+"\t|") }
	row("trace", "config", "requests", "waited", "wait p99 ms", "wait max ms", "instance·s", "over·s", "under·s", "peak", "scales", "cold starts")
	row("---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:")
	for _, tr := range traces {
		for _, v := range variants {
			cfg := revmeta.Defaults("default", "sim", "sim-00001")
			v.Mod(&cfg)
			r := Run(m, tr, cfg)
			r.Config = v.Name
			out = append(out, r)
			row(r.Trace, r.Config, fmt.Sprint(r.Requests),
				fmt.Sprintf("%d (%.2f%%)", r.Waited, 100*float64(r.Waited)/math.Max(1, float64(r.Requests))),
				fmt.Sprintf("%.0f", r.WaitP99), fmt.Sprintf("%.0f", r.WaitMax), fmt.Sprintf("%.0f", r.InstanceSec),
				fmt.Sprintf("%.0f", r.OverSec), fmt.Sprintf("%.0f", r.UnderSec),
				fmt.Sprint(r.Peak), fmt.Sprint(r.ScaleEvents), fmt.Sprint(r.ColdStarts))
		}
	}
	tw.Flush()
	return out
}

func main() {
	m := DefaultModel()
	trace := flag.String("trace", "", "only this trace (steady, ramp, spike, idle)")
	flag.DurationVar(&m.Start, "start", m.Start, "instance start time")
	flag.DurationVar(&m.Activate, "activate", m.Activate, "held request → scaler acts")
	flag.IntVar(&m.Capacity, "capacity", m.Capacity, "concurrent requests per instance")
	verbose := flag.Bool("v", false, "print every tick")
	flag.Parse()
	if *verbose {
		m.Log = os.Stderr
	}
	var trs []Trace
	for _, t := range Traces() {
		if *trace == "" || strings.EqualFold(*trace, t.Name) {
			trs = append(trs, t)
		}
	}
	Table(os.Stdout, m, trs, Variants())
}
