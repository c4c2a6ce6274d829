// Package kpa is the autoscaling maths of rouse: Knative's KPA decider rebuilt as a pure
// function of the samples recorded and `now`. It owns no goroutine, no clock and no I/O;
// the scaler loop feeds it one Sample per revision per tick and asks for a Decision.
//
// The rules, in the order Decide applies them:
//
//   - observed = average of the samples in the stable window (Window) and in the panic
//     window (PanicWindowPct of it); desired = ceil(observed / (Target × TargetUtilization)).
//   - both are kept within [floor(ready / MaxScaleDownRate), ceil(ready × MaxScaleUpRate)].
//   - the stable desire decides, but never scales down below the panic window's desire:
//     the stable window lags a ramp by half its length (a departure from Knative, which
//     drops back to the lagging average when panic ends).
//   - panic starts when the panic desire ≥ PanicThresholdPct × ready, and ends after a full
//     stable window without that; while panicking the count never goes down.
//   - missing data is not zero traffic: with no sample in the window (or none for MaxGap)
//     the count is held. A partial sample (a gateway did not answer) is a lower bound: it
//     may scale up, never down, for one window after it.
//   - a revision never scales down before a full window of data (a new revision keeps its
//     initial count, a new leader starts from the current counts).
//   - it goes to zero only when the stable desire has been zero, with no traffic, no held
//     request and no partial data, for ScaleToZeroGrace; Min > 0 never goes to zero.
//   - ActivationScale (Knative's activation-scale): while either window sees any traffic,
//     the desire is at least ActivationScale, so a wake from zero starts that many and
//     they stay while there is traffic; it does not keep a revision from zero.
//   - ScaleDownDelay (Knative's scale-down-delay): a scale-down takes effect only once the
//     load has wanted fewer instances for the whole delay: the count is held at the most
//     the load wanted within it (never above the current count: it does not scale up).
//     It holds the last instance too: the grace to zero starts once the delay has passed.
//   - Min and Max (0 = unbounded) clamp everything.
//
// The settings are a revmeta.Autoscaling that has passed its Validate (revmeta.FromMeta
// does that): kpa acts on them as they are, with no defaults of its own.
package kpa

import (
	"math"
	"time"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// Options are the knobs shared by every revision; the per-revision ones are revmeta.Autoscaling.
type Options struct {
	// Granularity is the bucket width of the windows; the scaler sets it to its tick.
	Granularity time.Duration
	// MaxGap is how long without a sample before the data counts as missing. Default 3 ticks.
	MaxGap time.Duration
}

// maxBuckets bounds memory per revision: a one-hour window at a 2 s tick would need 1800.
const maxBuckets = 256

func (o Options) withDefaults() Options {
	if o.Granularity <= 0 {
		o.Granularity = 2 * time.Second
	}
	if o.MaxGap <= 0 {
		o.MaxGap = 3 * o.Granularity
	}
	return o
}

// Sample is one observation of a revision, summed over every gateway that answered.
type Sample struct {
	Concurrency float64 // requests in flight + queued + held
	RPS         float64 // completed requests per second
	Held        int64   // requests waiting because no instance is ready
	// Partial: at least one gateway did not answer, so the values are a lower bound.
	Partial bool
}

func (s Sample) busy() bool { return s.Concurrency > 0 || s.RPS > 0 || s.Held > 0 }

// Reason says why a Decision came out as it did. It is a small integer so the loop can
// count decisions by reason without allocating.
type Reason uint8

// The reasons, from the most ordinary.
const (
	Hold      Reason = iota // the count is right
	ScaleUp                 // the stable window wants more
	ScaleDown               // the stable window wants fewer
	Panic                   // panic mode: the panic window wants more, or holds the peak
	Grace                   // would go to zero, waiting for the grace to pass
	ToZero                  // idle for the grace: zero
	Warming                 // would go down, but the window is not full of data yet
	Partial                 // would go down, but a gateway was missing within the window
	NoData                  // no sample to decide on: hold
	AtMin                   // clamped up to Min
	AtMax                   // clamped down to Max
	Activate                // held requests at zero: the fast path
	Failed                  // its instances failed to start: held at zero until the backoff passes (set by the loop, never by Decide)
	Delay                   // would go down, but the load wanted this many within ScaleDownDelay
	NumReasons
)

var reasonNames = [NumReasons]string{"hold", "scale_up", "scale_down", "panic", "grace", "to_zero",
	"warming", "partial", "no_data", "min", "max", "activate", "revision_failed", "scale_down_delay"}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Decision is the outcome of one Decide.
type Decision struct {
	Desired int
	Reason  Reason
	Panic   bool
	// Stable and PanicValue are the observed window averages, in the revision's metric units.
	Stable, PanicValue float64
	// ExcessBurstCapacity is Knative's: ready × Target − TargetBurstCapacity − panic
	// concurrency. Negative means the instances cannot absorb the configured burst, so the
	// gateway should queue in front of them; -1 also when unknown or TBC is unlimited.
	ExcessBurstCapacity float64
}

// Revision is the autoscaling state of one revision.
type Revision struct {
	cfg   revmeta.Autoscaling
	opts  Options
	win   window
	delay maxWindow // what the load wanted over ScaleDownDelay; empty when there is none

	// Derived from cfg and opts, in SetConfig only.
	stableBuckets, panicBuckets int
	targetValue                 float64 // Target × TargetUtilization: what one instance should carry

	lastValue float64 // the latest sample, in the metric's units

	firstAt   time.Time // first sample: the window is full of data a Window later
	lastAt    time.Time // latest sample
	unsureAt  time.Time // latest partial sample or data gap: no scale-down for a window
	zeroSince time.Time // when the stable desire became zero while idle; zero = not idle
	panicAt   time.Time // latest time the panic condition held; zero = not panicking
	maxPanic  int       // the highest count reached in this panic
}

// New returns the state of a revision with no sample yet. cfg must be valid
// (revmeta.Autoscaling.Validate).
func New(cfg revmeta.Autoscaling, opts Options) *Revision {
	r := &Revision{opts: opts.withDefaults()}
	r.SetConfig(cfg)
	return r
}

// Config is the revision's settings as last set.
func (r *Revision) Config() revmeta.Autoscaling { return r.cfg }

// SetConfig changes the revision's settings (valid, as for New) and derives what Decide
// needs from them; the windows are resized only when they must be.
func (r *Revision) SetConfig(cfg revmeta.Autoscaling) {
	gran := r.opts.Granularity
	if n := ceilDiv(cfg.Window, gran); n > maxBuckets {
		gran = time.Duration(ceilDiv(cfg.Window, maxBuckets))
	}
	stable := max(1, ceilDiv(cfg.Window, gran))
	if len(r.win.b) != stable || r.win.gran != int64(gran) {
		r.win = newWindow(gran, stable)
	}
	r.stableBuckets = stable
	panicWin := time.Duration(float64(cfg.Window) * cfg.PanicWindowPct / 100)
	r.panicBuckets = min(stable, max(1, ceilDiv(panicWin, gran)))
	r.targetValue = cfg.Target * cfg.TargetUtilization
	if cfg.ScaleDownDelay != r.cfg.ScaleDownDelay || r.delay.gran == 0 {
		r.delay = newMaxWindow(cfg.ScaleDownDelay, r.opts.Granularity)
	}
	r.cfg = cfg
}

func ceilDiv(a, b time.Duration) int { return int((a + b - 1) / b) }

// Record adds a sample taken at now.
func (r *Revision) Record(now time.Time, s Sample) {
	if r.firstAt.IsZero() {
		r.firstAt = now
	} else if now.Sub(r.lastAt) > r.opts.MaxGap {
		// A hole in the data might have hidden traffic: treat it as a partial sample.
		r.unsureAt = now
		r.zeroSince = time.Time{}
	}
	if now.After(r.lastAt) {
		r.lastAt = now
	}
	if s.Partial {
		r.unsureAt = now
		r.zeroSince = time.Time{}
	}
	if s.busy() {
		r.zeroSince = time.Time{}
	}
	v := s.Concurrency
	if r.cfg.Metric == revmeta.MetricRPS {
		v = s.RPS
	}
	r.lastValue = v
	r.win.record(now, v)
}

// Activate is the fast path from zero: held requests are waiting for a revision with no
// ready instance. It records them as traffic and returns the count they need, at least
// one and at least ActivationScale, within Min and Max.
func (r *Revision) Activate(now time.Time, held int64) int {
	r.Record(now, Sample{Concurrency: float64(held), Held: held})
	n := max(1, r.cfg.ActivationScale)
	if r.cfg.Metric != revmeta.MetricRPS {
		n = max(n, int(math.Ceil(float64(held)/r.targetValue)))
	}
	return r.bound(n)
}

func (r *Revision) bound(n int) int {
	if r.cfg.Max > 0 && n > r.cfg.Max {
		n = r.cfg.Max
	}
	return max(n, r.cfg.Min, 0)
}

// Panicking reports whether the revision is in panic mode.
func (r *Revision) Panicking() bool { return !r.panicAt.IsZero() }

// Decide returns the count the revision should run at now, given its ready instances and
// its current count (what Nomad was last told).
func (r *Revision) Decide(now time.Time, ready, current int) Decision {
	c := &r.cfg
	d := Decision{ExcessBurstCapacity: -1}
	stable, n := r.win.avg(now, r.stableBuckets)
	if n == 0 || now.Sub(r.lastAt) > r.opts.MaxGap {
		d.Desired, d.Reason, d.Panic = current, NoData, r.Panicking()
		r.clamp(&d)
		return d
	}
	panicV, np := r.win.avg(now, r.panicBuckets)
	if np == 0 {
		// The panic window is shorter than the gap between two samples: use the latest.
		panicV = r.lastValue
	}
	d.Stable, d.PanicValue = stable, panicV

	readyF := math.Max(1, float64(ready))
	maxUp := math.Ceil(c.MaxScaleUpRate * readyF)
	maxDown := math.Floor(readyF / c.MaxScaleDownRate)
	tv := r.targetValue
	dspc := math.Ceil(stable / tv)
	dppc := math.Ceil(panicV / tv)
	desiredStable := int(math.Min(math.Max(dspc, maxDown), maxUp))
	desiredPanic := int(math.Min(math.Max(dppc, maxDown), maxUp))
	// What the load wants now, before the scale-down rate limit: the delay holds this.
	need := int(math.Min(math.Max(dspc, dppc), maxUp))
	if a := c.ActivationScale; a > 1 {
		// Knative: any traffic wants at least ActivationScale, even beyond the rate limit.
		if dspc > 0 {
			desiredStable = max(desiredStable, a)
		}
		if dppc > 0 {
			desiredPanic = max(desiredPanic, a)
		}
		if need > 0 {
			need = max(need, a)
		}
	}

	over := dppc/readyF >= c.PanicThresholdPct/100
	switch {
	case over:
		if r.panicAt.IsZero() {
			// Panic holds at least what runs now: it never scales down.
			r.maxPanic = max(current, ready)
		}
		r.panicAt = now
	case !r.panicAt.IsZero() && now.Sub(r.panicAt) > c.Window:
		// The surge has been in the stable window long enough for it to take over.
		r.panicAt, r.maxPanic = time.Time{}, 0
	}

	d.Desired, d.Reason = desiredStable, Hold
	if desiredStable < current {
		// The stable window lags a ramp by half its length; never scale below what the
		// last few seconds of load need. This only ever removes scale-downs, so it cannot
		// flap.
		d.Desired = max(desiredStable, min(current, desiredPanic))
	}
	if r.Panicking() {
		d.Panic = true
		r.maxPanic = max(r.maxPanic, desiredStable, desiredPanic)
		d.Desired, d.Reason = r.maxPanic, Panic
		need = max(need, r.maxPanic)
	}

	// Scale-down delay: hold what the load wanted within the delay, up to the current count.
	held := 0
	if r.delay.k > 0 {
		r.delay.record(now, need)
		held = r.delay.max()
		if h := min(held, current); d.Desired < h {
			d.Desired = h
			if d.Reason == Hold && h == current {
				d.Reason = Delay
			}
		}
	}

	if c.TargetBurstCapacity == 0 {
		d.ExcessBurstCapacity = 0
	} else if c.TargetBurstCapacity > 0 {
		d.ExcessBurstCapacity = math.Floor(float64(ready)*c.Target - c.TargetBurstCapacity - panicV)
	}

	// Scale to zero: the grace runs from when the stable window first wanted zero.
	if dspc == 0 && !d.Panic && !r.unsureAt.Equal(r.lastAt) && held == 0 {
		if r.zeroSince.IsZero() {
			r.zeroSince = now
		}
	} else {
		r.zeroSince = time.Time{}
	}
	if d.Desired == 0 && current > 0 {
		if c.Min == 0 && !r.zeroSince.IsZero() && now.Sub(r.zeroSince) >= c.ScaleToZeroGrace {
			d.Reason = ToZero
		} else {
			d.Desired = 1
			if current == 1 {
				d.Reason = Grace
			}
		}
	}

	if d.Desired < current {
		switch {
		case now.Sub(r.firstAt) < c.Window:
			d.Desired, d.Reason = current, Warming
		case !r.unsureAt.IsZero() && now.Sub(r.unsureAt) < c.Window:
			d.Desired, d.Reason = current, Partial
		}
	}
	if d.Reason == Hold {
		switch {
		case d.Desired > current:
			d.Reason = ScaleUp
		case d.Desired < current:
			d.Reason = ScaleDown
		}
	}
	r.clamp(&d)
	return d
}

func (r *Revision) clamp(d *Decision) {
	if b := r.bound(d.Desired); b != d.Desired {
		if b > d.Desired {
			d.Reason = AtMin
		} else {
			d.Reason = AtMax
		}
		d.Desired = b
	}
}

// maxWindow is the highest value recorded within its last k buckets: a queue of values
// strictly decreasing from front to back, at most one per bucket, so it holds at most k
// entries and each record is amortized O(1).
type maxWindow struct {
	gran, k int64 // k = 0: no window
	q       []maxEntry
	at      int64 // the latest bucket recorded
}

type maxEntry struct {
	idx int64
	v   int
}

// newMaxWindow covers d in buckets of gran, widened to keep at most maxBuckets of them.
func newMaxWindow(d, gran time.Duration) maxWindow {
	if d <= 0 {
		return maxWindow{gran: 1}
	}
	if ceilDiv(d, gran) > maxBuckets {
		gran = time.Duration(ceilDiv(d, maxBuckets))
	}
	return maxWindow{gran: int64(gran), k: int64(ceilDiv(d, gran))}
}

func (w *maxWindow) record(t time.Time, v int) {
	i := max(t.UnixNano()/w.gran, w.at) // a clock that steps back stays in the latest bucket
	w.at = i
	n := 0
	for n < len(w.q) && i-w.q[n].idx >= w.k {
		n++
	}
	if n > 0 {
		w.q = append(w.q[:0], w.q[n:]...)
	}
	for len(w.q) > 0 && w.q[len(w.q)-1].v <= v {
		w.q = w.q[:len(w.q)-1]
	}
	if len(w.q) == 0 || w.q[len(w.q)-1].idx != i {
		w.q = append(w.q, maxEntry{i, v})
	}
}

// max is the highest value within the window as of the latest record; 0 when empty.
func (w *maxWindow) max() int {
	if len(w.q) == 0 {
		return 0
	}
	return w.q[0].v
}

// window is a ring of time buckets holding the sum and count of the samples in each.
// Empty buckets are missing data, not zeros: averages divide by the samples present.
type window struct {
	gran int64
	b    []bucket
}

type bucket struct {
	idx int64 // which bucket of time this slot holds now
	sum float64
	n   uint32
}

func newWindow(gran time.Duration, n int) window {
	w := window{gran: int64(gran), b: make([]bucket, n)}
	for i := range w.b {
		w.b[i].idx = -1
	}
	return w
}

func (w *window) record(t time.Time, v float64) {
	i := t.UnixNano() / w.gran
	s := &w.b[i%int64(len(w.b))]
	if s.idx != i {
		*s = bucket{idx: i}
	}
	s.sum += v
	s.n++
}

// avg averages the samples in the k most recent buckets up to t.
func (w *window) avg(t time.Time, k int) (float64, int) {
	i := t.UnixNano() / w.gran
	n := int64(len(w.b))
	var sum float64
	var cnt uint32
	for j := int64(0); j < int64(k); j++ {
		s := &w.b[(i-j)%n]
		if s.idx == i-j {
			sum += s.sum
			cnt += s.n
		}
	}
	if cnt == 0 {
		return 0, 0
	}
	return sum / float64(cnt), int(cnt)
}
