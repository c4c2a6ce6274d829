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

	// GuardTask and GuardPortLabel exist only in a revision with a hard limit
	// (concurrency > 0): the task running `rouse guard`, which admits at most that many
	// connections to the app at once, and the dynamic port it listens on, which the
	// revision's Consul service then points at (the app's own port stays PortLabel).
	GuardTask      = "rouse-guard"
	GuardPortLabel = "guard"
	// GuardBinMeta is the Nomad client meta key holding the path of the rouse binary on
	// the node (client `meta { rouse_bin = "/usr/local/bin/rouse" }`): the guard task runs
	// ${meta.rouse_bin}, and a revision with a guard is placed only where it is set.
	GuardBinMeta = "rouse_bin"

	// TagRouse marks every Consul service registered by a revision.
	TagRouse = "rouse"
	// TagServicePrefix + service name is the second tag ("rouse.service=hello").
	TagServicePrefix = "rouse.service="
	// TagNamespacePrefix + namespace is the third ("rouse.namespace=default").
	TagNamespacePrefix = "rouse.namespace="
	// MetaReadinessPath is the Consul service meta key holding the HTTP readiness path
	// (Consul meta keys allow only [A-Za-z0-9_-]), so the gateway can probe a new instance
	// the moment it registers; without it, the gateway uses the URL of the HTTP check once
	// Consul has run it, and until then a TCP connect.
	MetaReadinessPath = "rouse_readiness_path"
	// MetaReadinessGRPC is the Consul service meta key (value "true") saying that the
	// instance's readiness is the standard gRPC health check: grpc.health.v1.Health/Check
	// for service "" (the server as a whole), answered SERVING, over h2c. Consul runs it as
	// the service's check, and the gateway's own probe of a waking instance makes the same
	// call. A service has either this key or MetaReadinessPath, or neither (a TCP check).
	MetaReadinessGRPC = "rouse_readiness_grpc"
)

// Protocols: how the gateway talks to a revision's instances (Config.Protocol). Clients
// may speak HTTP/1.1 or HTTP/2 to the gateway either way; it translates.
const (
	// ProtocolHTTP1 is HTTP/1.1, the default; an empty Protocol reads as it.
	ProtocolHTTP1 = "http1"
	// ProtocolH2C is HTTP/2 without TLS, with prior knowledge (no Upgrade from HTTP/1.1):
	// what a gRPC server speaks.
	ProtocolH2C = "h2c"
)

// Job meta keys.
const (
	KeyService    = "rouse.service"
	KeyNamespace  = "rouse.namespace"
	KeyRevision   = "rouse.revision"
	KeyGeneration = "rouse.generation"
	KeySpecHash   = "rouse.spec_hash"
	// KeyProtocol is the protocol the gateway speaks to the instances, present only for
	// ProtocolH2C: without it a revision is HTTP/1.1, as every revision was before the key.
	KeyProtocol = "rouse.protocol"
	// KeyCreated is when apply registered the revision (RFC 3339, UTC). Not part of the
	// spec hash; Nomad's SubmitTime moves with every Jobs.Scale, so it cannot say this.
	KeyCreated = "rouse.created"

	// KeyImage is the image as the spec wrote it ("127.0.0.1:5000/hi:1"); KeyImageDigest
	// the digest the revision runs ("sha256:…"): the one apply resolved the tag to, or the
	// one the image names itself. Both are absent for a command, and the digest for an
	// image whose tag was not resolved (resolve_image = false).
	KeyImage       = "rouse.image"
	KeyImageDigest = "rouse.image_digest"

	KeyConcurrency = "rouse.concurrency" // hard per-instance limit, 0 = unlimited
	KeyTimeout     = "rouse.timeout"     // per-request timeout
	// KeyResponseStartTimeout and KeyIdleTimeout are written only when set.
	KeyResponseStartTimeout = "rouse.response_start_timeout"
	KeyIdleTimeout          = "rouse.idle_timeout"

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
	// KeyScaleDownDelay and KeyActivationScale are written only when set (non-zero, > 1).
	KeyScaleDownDelay  = "rouse.autoscaling.scale_down_delay"
	KeyActivationScale = "rouse.autoscaling.activation_scale"
)

// Metric names.
const (
	MetricConcurrency = "concurrency"
	MetricRPS         = "rps"
)

// The per-request timeout's default and bound.
const (
	DefaultTimeout = 300 * time.Second
	MaxTimeout     = 3600 * time.Second
)

// Config is everything about a revision that the gateway and the scaler act on. Its JSON
// (the Consul KV copy the gateway reads) has the Autoscaling fields inline, as before there
// was an Autoscaling type.
type Config struct {
	Service    string `json:"service"`
	Namespace  string `json:"namespace"`
	Revision   string `json:"revision"`
	Generation int    `json:"generation"`
	SpecHash   string `json:"spec_hash"`

	Image       string `json:"image,omitempty"`        // as written; "" for a command
	ImageDigest string `json:"image_digest,omitempty"` // what it runs; "" when it follows the tag

	Concurrency int           `json:"concurrency"` // container concurrency, 0 = unlimited
	Timeout     time.Duration `json:"timeout"`

	// Protocol is how the gateway talks to the instances: ProtocolH2C, or "" (or
	// ProtocolHTTP1) for HTTP/1.1. jobspec and FromMeta write "" for HTTP/1.1, so the KV
	// copy of such a revision is what it was before there was a protocol.
	Protocol string `json:"protocol,omitempty"`

	// ResponseStartTimeout bounds the wait for the first byte of the response (Knative's
	// responseStartTimeoutSeconds); IdleTimeout the time with no byte either way
	// (idleTimeoutSeconds). 0: none beyond Timeout.
	ResponseStartTimeout time.Duration `json:"response_start_timeout,omitempty"`
	IdleTimeout          time.Duration `json:"idle_timeout,omitempty"`

	Autoscaling
}

// H2C reports whether the gateway speaks HTTP/2 without TLS (prior knowledge) to the
// instances, as gRPC needs; otherwise it speaks HTTP/1.1.
func (c Config) H2C() bool { return c.Protocol == ProtocolH2C }

// Defaults returns a Config holding Knative's defaults for the revision named.
func Defaults(ns, service, revision string) Config {
	return Config{
		Service: service, Namespace: ns, Revision: revision,
		Timeout: DefaultTimeout, Autoscaling: DefaultAutoscaling(),
	}
}

// Meta renders the config as Nomad job meta.
func (c Config) Meta() map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	m := map[string]string{
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
	if c.Image != "" {
		m[KeyImage] = c.Image
	}
	if c.ResponseStartTimeout > 0 {
		m[KeyResponseStartTimeout] = c.ResponseStartTimeout.String()
	}
	if c.IdleTimeout > 0 {
		m[KeyIdleTimeout] = c.IdleTimeout.String()
	}
	if c.ScaleDownDelay > 0 {
		m[KeyScaleDownDelay] = c.ScaleDownDelay.String()
	}
	if c.ActivationScale > 1 {
		m[KeyActivationScale] = strconv.Itoa(c.ActivationScale)
	}
	if c.ImageDigest != "" {
		m[KeyImageDigest] = c.ImageDigest
	}
	if c.H2C() {
		// Only then: the meta of an HTTP/1.1 revision stays as it was before the key.
		m[KeyProtocol] = ProtocolH2C
	}
	return m
}

// IsRevision reports whether job meta marks a rouse revision.
func IsRevision(meta map[string]string) bool {
	return meta[KeyService] != "" && meta[KeyRevision] != ""
}

// FromMeta parses job meta written by Meta, and validates the autoscaling settings so the
// scaler can act on them as they are. A key that is missing or empty keeps Knative's
// default, so a revision written by an older rouse still scales. So does a zero where zero
// is not a legal value (target, target_utilization, window, the panic percentages and the
// scale rates): Compile wrote such zeros for a Spec built in Go without its defaults, and
// the scaler used to read them with fallbacks of its own (target_utilization 1, not 0.70).
// Malformed or out-of-bounds values, and an unknown protocol, are errors.
func FromMeta(meta map[string]string) (Config, error) {
	if !IsRevision(meta) {
		return Config{}, fmt.Errorf("job meta has no %s/%s: not a rouse revision", KeyService, KeyRevision)
	}
	c := Defaults(meta[KeyNamespace], meta[KeyService], meta[KeyRevision])
	c.SpecHash = meta[KeySpecHash]
	c.Image, c.ImageDigest = meta[KeyImage], meta[KeyImageDigest]
	if v := meta[KeyMetric]; v != "" {
		c.Metric = v
		c.Target = DefaultTarget(v)
	}
	p := parser{meta: meta}
	p.int(KeyGeneration, &c.Generation)
	p.int(KeyConcurrency, &c.Concurrency)
	p.dur(KeyTimeout, &c.Timeout)
	p.nonZeroFloat(KeyTarget, &c.Target)
	p.nonZeroFloat(KeyTargetUtilization, &c.TargetUtilization)
	p.int(KeyMin, &c.Min)
	p.int(KeyMax, &c.Max)
	p.int(KeyInitial, &c.Initial)
	p.nonZeroDur(KeyWindow, &c.Window)
	p.nonZeroFloat(KeyPanicWindowPct, &c.PanicWindowPct)
	p.nonZeroFloat(KeyPanicThresholdPct, &c.PanicThresholdPct)
	p.nonZeroFloat(KeyMaxScaleUpRate, &c.MaxScaleUpRate)
	p.nonZeroFloat(KeyMaxScaleDownRate, &c.MaxScaleDownRate)
	p.dur(KeyScaleToZeroGrace, &c.ScaleToZeroGrace)
	p.float(KeyTargetBurstCapacity, &c.TargetBurstCapacity)
	p.dur(KeyResponseStartTimeout, &c.ResponseStartTimeout)
	p.dur(KeyIdleTimeout, &c.IdleTimeout)
	p.dur(KeyScaleDownDelay, &c.ScaleDownDelay)
	p.int(KeyActivationScale, &c.ActivationScale)
	p.set(KeyProtocol, func(v string) error {
		switch v {
		case ProtocolHTTP1: // the default, which Meta does not write; "" in Config
		case ProtocolH2C:
			c.Protocol = ProtocolH2C
		default:
			return fmt.Errorf("unknown protocol: want %q or %q", ProtocolHTTP1, ProtocolH2C)
		}
		return nil
	})
	if p.err != nil {
		return c, p.err
	}
	if err := c.Autoscaling.Validate(); err != nil {
		return c, fmt.Errorf("job meta: %w", err)
	}
	return c, nil
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

// nonZeroFloat is float for a setting whose zero means "not set": it keeps dst's default.
func (p *parser) nonZeroFloat(key string, dst *float64) {
	v := *dst
	p.float(key, &v)
	if v != 0 {
		*dst = v
	}
}

// nonZeroDur is dur for a setting whose zero means "not set".
func (p *parser) nonZeroDur(key string, dst *time.Duration) {
	v := *dst
	p.dur(key, &v)
	if v != 0 {
		*dst = v
	}
}
