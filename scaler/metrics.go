package scaler

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rouse-run/rouse/scaler/kpa"
)

// metrics are the scaler's Prometheus series, in a registry of its own (no globals).
type metrics struct {
	reg            *prometheus.Registry
	decisions      [kpa.NumReasons]prometheus.Counter
	scales         *prometheus.CounterVec
	activations    prometheus.Counter
	failures       prometheus.Counter
	gatewayErrors  prometheus.Counter
	tickDuration   prometheus.Histogram
	activationLag  prometheus.Histogram
	leader         prometheus.Gauge
	leaderChanges  prometheus.Counter
	revisionStates atomic.Pointer[[]status] // the last tick's per-revision view
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rouse_scaler_decisions_total", Help: "Per-revision decisions, by the reason the count came out as it did.",
	}, []string{"reason"})
	for r := kpa.Reason(0); r < kpa.NumReasons; r++ {
		m.decisions[r] = dec.WithLabelValues(r.String())
	}
	m.scales = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rouse_scaler_scale_calls_total", Help: "Nomad Jobs.Scale calls, by direction and result (ok, job_gone, acl_denied, deployment_lock, timeout, error).",
	}, []string{"direction", "result"})
	m.activations = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rouse_scaler_activations_total", Help: "Revisions scaled up by the activation path (held requests at zero).",
	})
	m.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rouse_scaler_revision_failures_total", Help: "Wakes whose every allocation failed: published to the gateways, scaled to 0, backed off.",
	})
	m.gatewayErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rouse_scaler_gateway_errors_total", Help: "Gauge reads that failed; the gateway was left out of that tick.",
	})
	m.tickDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "rouse_scaler_tick_duration_seconds", Help: "One tick: read gateways and Nomad, decide, scale.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	m.activationLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "rouse_scaler_activation_seconds", Help: "Activation answer received → Nomad accepted the scale-up.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1},
	})
	m.leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rouse_scaler_leader", Help: "1 while this replica leads.",
	})
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rouse_scaler_leadership_acquired_total", Help: "Times this replica became leader.",
	})
	m.reg.MustRegister(dec, m.scales, m.activations, m.failures, m.gatewayErrors, m.tickDuration, m.activationLag,
		m.leader, m.leaderChanges, revisionCollector{m}, collectors.NewGoCollector())
	return m
}

// revisionCollector renders the per-revision series from the last tick's snapshot at
// scrape time, so a tick over 10 000 revisions pays nothing for them.
type revisionCollector struct{ m *metrics }

var (
	_ prometheus.Collector = revisionCollector{}
)

func revDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, []string{"namespace", "revision"}, nil)
}

// The descriptors are values computed per call: cheap, and no package state.
func (revisionCollector) descs() (desired, ready, panic, stable, panicV, ebc *prometheus.Desc) {
	return revDesc("rouse_scaler_desired_instances", "Instances the scaler wants for the revision."),
		revDesc("rouse_scaler_ready_instances", "Running instances of the revision, from Nomad."),
		revDesc("rouse_scaler_panic_mode", "1 while the revision is in panic mode."),
		revDesc("rouse_scaler_observed_stable", "Stable-window average of the revision's metric (concurrency or rps)."),
		revDesc("rouse_scaler_observed_panic", "Panic-window average of the revision's metric."),
		revDesc("rouse_scaler_excess_burst_capacity", "Knative's excess burst capacity; negative = the gateway should queue.")
}

func (c revisionCollector) Describe(ch chan<- *prometheus.Desc) {
	a, b, d, e, f, g := c.descs()
	for _, x := range []*prometheus.Desc{a, b, d, e, f, g} {
		ch <- x
	}
}

func (c revisionCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.m.revisionStates.Load()
	if p == nil {
		return
	}
	desired, ready, panic, stable, panicV, ebc := c.descs()
	for _, s := range *p {
		ns, rev := s.key.ns, s.key.rev
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, ns, rev)
		}
		g(desired, float64(s.desired))
		g(ready, float64(s.ready))
		g(panic, b2f(s.panic))
		g(stable, s.stable)
		g(panicV, s.panicV)
		g(ebc, s.ebc)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// adminHandler serves /metrics, /healthz and /decisions (a table a person can read).
func (s *Scaler) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		role := "standby"
		if s.IsLeader() {
			role = "leader"
		}
		fmt.Fprintf(w, "ok %s %s\n", s.cfg.ID, role)
	})
	mux.HandleFunc("/decisions", func(w http.ResponseWriter, r *http.Request) {
		writeDecisions(w, s.metrics.revisionStates.Load())
	})
	return mux
}

// writeDecisions prints the last tick's decisions, one revision a line, sorted.
func writeDecisions(w io.Writer, p *[]status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REVISION\tREADY\tDESIRED\tREASON\tPANIC\tSTABLE\tPANIC-WINDOW\tTARGET\tEBC")
	if p != nil {
		ss := slices.Clone(*p)
		slices.SortFunc(ss, func(a, b status) int { return strings.Compare(a.key.String(), b.key.String()) })
		for _, s := range ss {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%v\t%.1f\t%.1f\t%g×%g%%\t%g\n", s.key, s.ready, s.desired, s.reason,
				s.panic, s.stable, s.panicV, s.target, s.utilPct, s.ebc)
		}
	}
	tw.Flush()
}
