// Package revmeta is the contract between a revision's Nomad job and the parts that act on it:
// the names of the job meta keys rouse writes, and the typed revision configuration they carry.
// jobspec writes it; the gateway (through the KV copy) and the scaler read it.
package revmeta

import (
	"fmt"
	"strconv"
	"time"
)

// Fixed names inside every revision job. The Consul service is named after the revision.
const (
	Group     = "app"
	Task      = "app"
	PortLabel = "http"

	// TagRouse marks every Consul service registered by a revision.
	TagRouse = "rouse"
	// TagServicePrefix + service name is the second tag ("rouse.service=hello").
	TagServicePrefix = "rouse.service="
	// TagNamespacePrefix + namespace is the third ("rouse.namespace=default").
	TagNamespacePrefix = "rouse.namespace="
	// MetaReadinessPath is the Consul service meta key holding the HTTP readiness path
	// (Consul meta keys allow only [A-Za-z0-9_-]).
	MetaReadinessPath = "rouse_readiness_path"
)

// Job meta keys.
const (
	KeyService    = "rouse.service"
	KeyNamespace  = "rouse.namespace"
	KeyRevision   = "rouse.revision"
	KeyGeneration = "rouse.generation"
	KeySpecHash   = "rouse.spec_hash"
	// KeyCreated is when apply registered the revision (RFC 3339, UTC). Not part of the
	// spec hash; Nomad's SubmitTime moves with every Jobs.Scale, so it cannot say this.
	KeyCreated = "rouse.created"

	KeyConcurrency = "rouse.concurrency" // hard per-instance limit, 0 = unlimited
	KeyTimeout     = "rouse.timeout"     // per-request timeout

	KeyMetric              = "rouse.autoscaling.metric"
	KeyTarget              = "rouse.autoscaling.target"
	KeyTargetUtilization   = "rouse.autoscaling.target_utilization"
	KeyMin                 = "rouse.autoscaling.min"
	KeyMax                 = "rouse.autoscaling.max"
	KeyInitial             = "rouse.autoscaling.initial"
	KeyWindow              = "rouse.autoscaling.window"
	KeyPanicWindowPct      = "rouse.autoscaling.panic_window_percentage"
	KeyPanicThresholdPct   = "rouse.autoscaling.panic_threshold_percentage"
	KeyMaxScaleUpRate      = "rouse.autoscaling.max_scale_up_rate"
	KeyMaxScaleDownRate    = "rouse.autoscaling.max_scale_down_rate"
	KeyScaleToZeroGrace    = "rouse.autoscaling.scale_to_zero_grace"
	KeyTargetBurstCapacity = "rouse.autoscaling.target_burst_capacity"
)

// Metric names.
const (
	MetricConcurrency = "concurrency"
	MetricRPS         = "rps"
)

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
	DefaultTimeout             = 300 * time.Second
	MaxTimeout                 = 3600 * time.Second
)

// Config is everything about a revision that the gateway and the scaler act on.
type Config struct {
	Service    string `json:"service"`
	Namespace  string `json:"namespace"`
	Revision   string `json:"revision"`
	Generation int    `json:"generation"`
	SpecHash   string `json:"spec_hash"`

	Concurrency int           `json:"concurrency"` // container concurrency, 0 = unlimited
	Timeout     time.Duration `json:"timeout"`

	Metric              string        `json:"metric"`
	Target              float64       `json:"target"` // per instance, in Metric units
	TargetUtilization   float64       `json:"target_utilization"`
	Min                 int           `json:"min"`
	Max                 int           `json:"max"` // 0 = unbounded
	Initial             int           `json:"initial"`
	Window              time.Duration `json:"window"`
	PanicWindowPct      float64       `json:"panic_window_percentage"`
	PanicThresholdPct   float64       `json:"panic_threshold_percentage"`
	MaxScaleUpRate      float64       `json:"max_scale_up_rate"`
	MaxScaleDownRate    float64       `json:"max_scale_down_rate"`
	ScaleToZeroGrace    time.Duration `json:"scale_to_zero_grace"`
	TargetBurstCapacity float64       `json:"target_burst_capacity"` // -1 = unlimited, 0 = never queue in front of instances
}

// Defaults returns a Config holding Knative's defaults for the revision named.
func Defaults(ns, service, revision string) Config {
	return Config{
		Service: service, Namespace: ns, Revision: revision,
		Timeout: DefaultTimeout, Metric: MetricConcurrency, Target: DefaultConcurrencyTarget,
		TargetUtilization: DefaultTargetUtilization, Initial: DefaultInitial, Window: DefaultWindow,
		PanicWindowPct: DefaultPanicWindowPct, PanicThresholdPct: DefaultPanicThresholdPct,
		MaxScaleUpRate: DefaultMaxScaleUpRate, MaxScaleDownRate: DefaultMaxScaleDownRate,
		ScaleToZeroGrace: DefaultScaleToZeroGrace, TargetBurstCapacity: DefaultTargetBurstCapacity,
	}
}

// Meta renders the config as Nomad job meta.
func (c Config) Meta() map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	return map[string]string{
		KeyService: c.Service, KeyNamespace: c.Namespace, KeyRevision: c.Revision,
		KeyGeneration: strconv.Itoa(c.Generation), KeySpecHash: c.SpecHash,
		KeyConcurrency: strconv.Itoa(c.Concurrency), KeyTimeout: c.Timeout.String(),
		KeyMetric: c.Metric, KeyTarget: f(c.Target), KeyTargetUtilization: f(c.TargetUtilization),
		KeyMin: strconv.Itoa(c.Min), KeyMax: strconv.Itoa(c.Max), KeyInitial: strconv.Itoa(c.Initial),
		KeyWindow: c.Window.String(), KeyPanicWindowPct: f(c.PanicWindowPct),
		KeyPanicThresholdPct: f(c.PanicThresholdPct), KeyMaxScaleUpRate: f(c.MaxScaleUpRate),
		KeyMaxScaleDownRate: f(c.MaxScaleDownRate), KeyScaleToZeroGrace: c.ScaleToZeroGrace.String(),
		KeyTargetBurstCapacity: f(c.TargetBurstCapacity),
	}
}

// IsRevision reports whether job meta marks a rouse revision.
func IsRevision(meta map[string]string) bool {
	return meta[KeyService] != "" && meta[KeyRevision] != ""
}

// FromMeta parses job meta written by Meta. Missing keys keep Knative's defaults, so
// a revision written by an older rouse still scales; malformed values are errors.
func FromMeta(meta map[string]string) (Config, error) {
	if !IsRevision(meta) {
		return Config{}, fmt.Errorf("job meta has no %s/%s: not a rouse revision", KeyService, KeyRevision)
	}
	c := Defaults(meta[KeyNamespace], meta[KeyService], meta[KeyRevision])
	c.SpecHash = meta[KeySpecHash]
	if v := meta[KeyMetric]; v != "" {
		c.Metric = v
		if v == MetricRPS {
			c.Target = DefaultRPSTarget
		}
	}
	p := parser{meta: meta}
	p.int(KeyGeneration, &c.Generation)
	p.int(KeyConcurrency, &c.Concurrency)
	p.dur(KeyTimeout, &c.Timeout)
	p.float(KeyTarget, &c.Target)
	p.float(KeyTargetUtilization, &c.TargetUtilization)
	p.int(KeyMin, &c.Min)
	p.int(KeyMax, &c.Max)
	p.int(KeyInitial, &c.Initial)
	p.dur(KeyWindow, &c.Window)
	p.float(KeyPanicWindowPct, &c.PanicWindowPct)
	p.float(KeyPanicThresholdPct, &c.PanicThresholdPct)
	p.float(KeyMaxScaleUpRate, &c.MaxScaleUpRate)
	p.float(KeyMaxScaleDownRate, &c.MaxScaleDownRate)
	p.dur(KeyScaleToZeroGrace, &c.ScaleToZeroGrace)
	p.float(KeyTargetBurstCapacity, &c.TargetBurstCapacity)
	return c, p.err
}

type parser struct {
	meta map[string]string
	err  error
}

func (p *parser) set(key string, parse func(string) error) {
	v, ok := p.meta[key]
	if !ok || v == "" || p.err != nil {
		return
	}
	if err := parse(v); err != nil {
		p.err = fmt.Errorf("job meta %s=%q: %w", key, v, err)
	}
}

func (p *parser) int(key string, dst *int) {
	p.set(key, func(v string) (err error) { *dst, err = strconv.Atoi(v); return })
}

func (p *parser) float(key string, dst *float64) {
	p.set(key, func(v string) (err error) { *dst, err = strconv.ParseFloat(v, 64); return })
}

func (p *parser) dur(key string, dst *time.Duration) {
	p.set(key, func(v string) (err error) { *dst, err = time.ParseDuration(v); return })
}
