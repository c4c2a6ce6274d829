package gateway

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series. Per-request work is a cached Observer and
// atomic adds; per-revision request counts by code and the queue/instance gauges are read
// from the live state at scrape time by a collector.
type metrics struct {
	g            *Gateway
	reg          *prometheus.Registry
	duration     *prometheus.HistogramVec
	coldStart    *prometheus.HistogramVec
	unknownHost  prometheus.Counter
	rejected     *prometheus.CounterVec
	tableUpdates prometheus.Counter
	watchErrors  *prometheus.CounterVec
	probes       *prometheus.CounterVec
	h2Conns      prometheus.Counter
	h2Errors     *prometheus.CounterVec

	requestsDesc, inFlightDesc, queuedDesc, heldDesc, readyDesc *prometheus.Desc
}

var _ prometheus.Collector = (*metrics)(nil)

func newMetrics(reg *prometheus.Registry, g *Gateway) (*metrics, error) {
	revLabels := []string{"namespace", "service", "revision"}
	m := &metrics{
		g: g, reg: reg,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "rouse", Subsystem: "gateway", Name: "request_duration_seconds",
			Help:    "Time from request received to response written, by revision (includes any cold start).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, revLabels),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "rouse", Subsystem: "gateway", Name: "cold_start_wait_seconds",
			Help:    "Time requests were held waiting for a revision with no ready instance to start.",
			Buckets: []float64{.05, .1, .15, .2, .25, .3, .4, .5, .75, 1, 1.5, 2, 3, 5, 10, 30, 60},
		}, revLabels),
		unknownHost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "rouse", Subsystem: "gateway", Name: "unknown_host_requests_total",
			Help: "Requests for a host no service has (answered 404)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "rouse", Subsystem: "gateway", Name: "rejected_requests_total",
			Help: "Requests the gateway answered itself, by reason (overflow, activation_timeout, timeout, header_too_large, …)."}, []string{"reason"}),
		tableUpdates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "rouse", Subsystem: "gateway", Name: "route_table_updates_total",
			Help: "Route tables built from Consul KV."}),
		watchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "rouse", Subsystem: "gateway", Name: "consul_watch_errors_total",
			Help: "Failed Consul blocking queries, by watch (the last state keeps being served)."}, []string{"watch"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "rouse", Subsystem: "gateway", Name: "readiness_probes_total",
			Help: "The gateway's own readiness probes of starting instances, by result."}, []string{"result"}),
		h2Conns: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "rouse", Subsystem: "gateway", Name: "http2_connections_total",
			Help: "Client connections served as HTTP/2 (ALPN h2, prior-knowledge h2c, or Upgrade: h2c)."}),
		h2Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "rouse", Subsystem: "gateway", Name: "http2_errors_total",
			Help: "HTTP/2 protocol errors and limits hit, by the HTTP/2 library's name for them (upstream_… for connections to h2c instances)."}, []string{"type"}),
		requestsDesc: prometheus.NewDesc("rouse_gateway_requests_total", "Requests completed, by revision and status code.",
			append(revLabels, "code"), nil),
		inFlightDesc: prometheus.NewDesc("rouse_gateway_in_flight_requests", "Requests being proxied to an instance.", revLabels, nil),
		queuedDesc:   prometheus.NewDesc("rouse_gateway_queued_requests", "Requests waiting for a free slot on a ready instance.", revLabels, nil),
		heldDesc:     prometheus.NewDesc("rouse_gateway_held_requests", "Requests held because the revision has no ready instance.", revLabels, nil),
		readyDesc:    prometheus.NewDesc("rouse_gateway_ready_instances", "Instances the gateway routes to.", revLabels, nil),
	}
	for _, c := range []prometheus.Collector{m.duration, m.coldStart, m.unknownHost, m.rejected, m.tableUpdates, m.watchErrors, m.probes, m.h2Conns, m.h2Errors, m} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) registry() *prometheus.Registry { return m.reg }

// forget drops a retired revision's histograms.
func (m *metrics) forget(r *revision) {
	m.duration.DeleteLabelValues(r.ns, r.svc, r.name)
	m.coldStart.DeleteLabelValues(r.ns, r.svc, r.name)
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.requestsDesc, m.inFlightDesc, m.queuedDesc, m.heldDesc, m.readyDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from the live revisions.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	rt := m.g.routing.Load()
	if rt == nil {
		return
	}
	for _, r := range rt.revs {
		l := []string{r.ns, r.svc, r.name}
		r.codes.Range(func(k, v any) bool {
			ch <- prometheus.MustNewConstMetric(m.requestsDesc, prometheus.CounterValue, float64(v.(*atomic.Uint64).Load()), r.ns, r.svc, r.name, strconv.Itoa(k.(int)))
			return true
		})
		s := r.stats()
		ch <- prometheus.MustNewConstMetric(m.inFlightDesc, prometheus.GaugeValue, float64(s.InFlight), l...)
		ch <- prometheus.MustNewConstMetric(m.queuedDesc, prometheus.GaugeValue, float64(s.Queued), l...)
		ch <- prometheus.MustNewConstMetric(m.heldDesc, prometheus.GaugeValue, float64(s.Held), l...)
		ch <- prometheus.MustNewConstMetric(m.readyDesc, prometheus.GaugeValue, float64(s.Ready), l...)
	}
}
