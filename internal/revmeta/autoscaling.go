package revmeta

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Autoscaling is a revision's autoscaler settings, Knative's names and meanings (its
// DeciderSpec): the one type for them. jobspec decodes the spec's autoscaling block into it,
// Config carries it in job meta and in Consul KV, and the scaler's decider (scaler/kpa) acts
// on it as it is. Every way in validates it once: the HCL decoder against the source,
// Compile and FromMeta with Validate. Downstream trusts it: no part re-defaults a field.
type Autoscaling struct {
	Metric              string        `json:"metric"`             // MetricConcurrency or MetricRPS
	Target              float64       `json:"target"`             // per instance, in Metric units
	TargetUtilization   float64       `json:"target_utilization"` // fraction of Target to aim at, 0 < u ≤ 1
	Min                 int           `json:"min"`
	Max                 int           `json:"max"` // 0 = unbounded
	Initial             int           `json:"initial"`
	Window              time.Duration `json:"window"`                     // the stable window
	PanicWindowPct      float64       `json:"panic_window_percentage"`    // of Window
	PanicThresholdPct   float64       `json:"panic_threshold_percentage"` // of the ready instances
	MaxScaleUpRate      float64       `json:"max_scale_up_rate"`
	MaxScaleDownRate    float64       `json:"max_scale_down_rate"`
	ScaleToZeroGrace    time.Duration `json:"scale_to_zero_grace"`
	TargetBurstCapacity float64       `json:"target_burst_capacity"` // -1 = unlimited, 0 = never queue in front of instances
	// ScaleDownDelay keeps the instance count for this long after the load drops before a
	// decision to scale down takes effect (Knative's scale-down-delay; 0 = none). Not the
	// grace before zero.
	ScaleDownDelay time.Duration `json:"scale_down_delay,omitempty"`
	// ActivationScale is how many instances a wake from zero starts, and the least kept
	// while there is any traffic (Knative's activation-scale, as its autoscaler applies
	// it; 0 or 1 = one). Without traffic the revision still scales to zero.
	ActivationScale int `json:"activation_scale,omitempty"`
}

// Knative's defaults, which users already know (DESIGN.md).
const (
	DefaultConcurrencyTarget   = 100.0
	DefaultRPSTarget           = 200.0
	DefaultTargetUtilization   = 0.70
	DefaultWindow              = 60 * time.Second
	DefaultPanicWindowPct      = 10.0
	DefaultPanicThresholdPct   = 200.0
	DefaultMaxScaleUpRate      = 1000.0
	DefaultMaxScaleDownRate    = 2.0
	DefaultScaleToZeroGrace    = 30 * time.Second
	DefaultTargetBurstCapacity = 200.0
	DefaultInitial             = 1
)

// The bounds Validate enforces (Knative's, where it has them). jobspec reports the same
// bounds against the HCL source, in the spec's units.
const (
	MinTarget            = 0.01
	MinTargetUtilization = 0.01 // target_utilization_percentage = 1 in the spec
	MaxCount             = 100000
	MinWindow            = 6 * time.Second
	MaxWindow            = time.Hour
	MinPanicWindowPct    = 1.0
	MaxPanicWindowPct    = 100.0
	MinPanicThresholdPct = 110.0
	MaxPanicThresholdPct = 1000.0
	// MinScaleRate is exclusive: MaxScaleUpRate and MaxScaleDownRate must exceed it.
	MinScaleRate        = 1.0
	MaxScaleToZeroGrace = time.Hour
	MaxScaleDownDelay   = time.Hour // Knative's bound
)

// DefaultTarget is the per-instance target of a metric when the spec sets none.
func DefaultTarget(metric string) float64 {
	if metric == MetricRPS {
		return DefaultRPSTarget
	}
	return DefaultConcurrencyTarget
}

// DefaultAutoscaling returns Knative's defaults, for the concurrency metric.
func DefaultAutoscaling() Autoscaling {
	return Autoscaling{
		Metric: MetricConcurrency, Target: DefaultConcurrencyTarget, TargetUtilization: DefaultTargetUtilization,
		Initial: DefaultInitial, Window: DefaultWindow, PanicWindowPct: DefaultPanicWindowPct,
		PanicThresholdPct: DefaultPanicThresholdPct, MaxScaleUpRate: DefaultMaxScaleUpRate,
		MaxScaleDownRate: DefaultMaxScaleDownRate, ScaleToZeroGrace: DefaultScaleToZeroGrace,
		TargetBurstCapacity: DefaultTargetBurstCapacity,
	}
}

// Validate reports every setting outside its bounds, each named by its JSON field.
func (a Autoscaling) Validate() error {
	var errs []error
	bad := func(field string, v any, rule string) {
		errs = append(errs, fmt.Errorf("autoscaling %s %v: %s", field, v, rule))
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if a.Metric != MetricConcurrency && a.Metric != MetricRPS {
		bad("metric", fmt.Sprintf("%q", a.Metric), fmt.Sprintf("must be %q or %q", MetricConcurrency, MetricRPS))
	}
	if !finite(a.Target) || a.Target < MinTarget {
		bad("target", a.Target, fmt.Sprintf("must be a finite number of at least %g", MinTarget))
	}
	if !(a.TargetUtilization >= MinTargetUtilization && a.TargetUtilization <= 1) {
		bad("target_utilization", a.TargetUtilization, fmt.Sprintf("must be between %g and 1", MinTargetUtilization))
	}
	for _, c := range []struct {
		field string
		v     int
	}{{"min", a.Min}, {"max", a.Max}, {"initial", a.Initial}} {
		if c.v < 0 || c.v > MaxCount {
			bad(c.field, c.v, fmt.Sprintf("must be between 0 and %d", MaxCount))
		}
	}
	if a.ActivationScale < 0 || a.ActivationScale > MaxCount {
		bad("activation_scale", a.ActivationScale, fmt.Sprintf("must be between 0 and %d", MaxCount))
	}
	if a.Max > 0 && a.ActivationScale > a.Max {
		bad("activation_scale", a.ActivationScale, fmt.Sprintf("is greater than max (%d)", a.Max))
	}
	if a.ScaleDownDelay < 0 || a.ScaleDownDelay > MaxScaleDownDelay {
		bad("scale_down_delay", a.ScaleDownDelay, fmt.Sprintf("must be between 0 and %s", MaxScaleDownDelay))
	}
	if a.Max > 0 && a.Min > a.Max {
		bad("min", a.Min, fmt.Sprintf("is greater than max (%d)", a.Max))
	}
	if a.Max > 0 && a.Initial > a.Max {
		bad("initial", a.Initial, fmt.Sprintf("is greater than max (%d)", a.Max))
	}
	if a.Window < MinWindow || a.Window > MaxWindow {
		bad("window", a.Window, fmt.Sprintf("must be between %s and %s", MinWindow, MaxWindow))
	}
	if !(a.PanicWindowPct >= MinPanicWindowPct && a.PanicWindowPct <= MaxPanicWindowPct) {
		bad("panic_window_percentage", a.PanicWindowPct, fmt.Sprintf("must be between %g and %g", MinPanicWindowPct, MaxPanicWindowPct))
	}
	if !(a.PanicThresholdPct >= MinPanicThresholdPct && a.PanicThresholdPct <= MaxPanicThresholdPct) {
		bad("panic_threshold_percentage", a.PanicThresholdPct, fmt.Sprintf("must be between %g and %g", MinPanicThresholdPct, MaxPanicThresholdPct))
	}
	if !finite(a.MaxScaleUpRate) || a.MaxScaleUpRate <= MinScaleRate {
		bad("max_scale_up_rate", a.MaxScaleUpRate, fmt.Sprintf("must be a finite number greater than %g", MinScaleRate))
	}
	if !finite(a.MaxScaleDownRate) || a.MaxScaleDownRate <= MinScaleRate {
		bad("max_scale_down_rate", a.MaxScaleDownRate, fmt.Sprintf("must be a finite number greater than %g", MinScaleRate))
	}
	if a.ScaleToZeroGrace < 0 || a.ScaleToZeroGrace > MaxScaleToZeroGrace {
		bad("scale_to_zero_grace", a.ScaleToZeroGrace, fmt.Sprintf("must be between 0s and %s", MaxScaleToZeroGrace))
	}
	if !finite(a.TargetBurstCapacity) || (a.TargetBurstCapacity < 0 && a.TargetBurstCapacity != -1) {
		bad("target_burst_capacity", a.TargetBurstCapacity, "must be -1 (unlimited) or a finite number of at least 0")
	}
	return errors.Join(errs...)
}
