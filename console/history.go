package console

import (
	"errors"
	"math"
	"sort"
	"time"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/store"
)

// observation is everything one sample read: the control plane's view and each daemon's.
// history.add turns a sequence of them into series; nothing in it reads a clock.
type observation struct {
	at       time.Time
	services []serviceRead
	gateways []gatewayRead
	scalers  []scalerRead
	failures []store.Failure
	journal  uint64 // the route journal's KV index (0: not read)
	problems []problem
	more     int // services listed beyond Config.MaxServices, not described
}

// serviceRead is one service: its list line and, when Describe worked, its detail.
type serviceRead struct {
	summary control.ServiceSummary
	detail  *control.ServiceDetail
}

// problem is a read that failed, shown on every page.
type problem struct {
	What    string // "list services", "describe default/hello", "gateway gw-1"
	Message string
	Denied  bool   // an ACL denial: the token lacks a capability
	Token   string // the variable naming the token (NOMAD_TOKEN, CONSUL_HTTP_TOKEN) for a denial
}

func problemOf(what string, err error) problem {
	p := problem{What: what, Message: err.Error()}
	var pe *control.PermissionError
	if errors.As(err, &pe) {
		p.Denied, p.Token = true, pe.TokenVar
	}
	return p
}

// point is one revision in one sample. Rates and quantiles are NaN when unknown (the first
// sample, no gateway answering, no request in the window): a gap in a chart, not a zero.
type point struct {
	at                     time.Time
	desired, ready         int // the Nomad group count; instances passing in Consul
	rps, errRPS            float64
	inFlight, queued, held int64
	p50, p95               float64   // request latency over latencyWindow, seconds
	lat                    histogram // cumulative over every gateway, for the quantiles
	err5xx                 float64   // cumulative
}

// decisionAt is a scaler decision and when it was first seen.
type decisionAt struct {
	at time.Time
	decision
}

// series is one revision's history.
type series struct {
	points    []point
	coldStart histogram         // the latest cumulative cold-start waits, every gateway
	decisions []decisionAt      // changes only, newest last
	gwTotals  map[string]uint64 // requests_total per gateway at the last sample
	last      time.Time         // the last sample that saw it
}

// maxDecisions bounds the decisions kept per revision.
const maxDecisions = 12

// latencyWindow is how many samples back the latency quantiles reach (10 s at 2 s):
// a single 2 s step holds too few requests for a p95.
const latencyWindow = 5

// history keeps the last keep of every revision, plus the latest sample as read.
type history struct {
	keep   time.Duration
	revs   map[revKey]*series
	latest observation
	first  time.Time // the first sample
	n      int       // samples taken
}

func newHistory(keep time.Duration) *history {
	return &history{keep: keep, revs: map[revKey]*series{}}
}

// add records one sample.
func (h *history) add(o observation) {
	if h.n == 0 {
		h.first = o.at
	}
	h.latest, h.n = o, h.n+1
	gauges := map[revKey][]gatewaySample{}
	lat, cold := map[revKey]*histogram{}, map[revKey]*histogram{}
	errs := map[revKey]float64{}
	for _, g := range o.gateways {
		if g.err != nil {
			continue
		}
		for k, v := range g.gauges {
			gauges[k] = append(gauges[k], gatewaySample{g.daemon.ID, v.InFlight, v.Queued, v.Held, v.RequestsTotal})
		}
		for k, hv := range g.latency {
			if lat[k] == nil {
				lat[k] = &histogram{}
			}
			lat[k].add(hv)
		}
		for k, hv := range g.coldStart {
			if cold[k] == nil {
				cold[k] = &histogram{}
			}
			cold[k].add(hv)
		}
		for k, v := range g.errors5xx {
			errs[k] += v
		}
	}
	decisions := map[revKey]decision{}
	for _, s := range o.scalers {
		if s.leader && s.err == nil {
			decisions = s.decisions
		}
	}
	for _, sr := range o.services {
		if sr.detail == nil {
			continue // no revisions known this sample: keep what was
		}
		for _, ri := range sr.detail.Revisions {
			k := revKey{sr.summary.Namespace, ri.Name}
			s := h.revs[k]
			if s == nil {
				s = &series{gwTotals: map[string]uint64{}}
				h.revs[k] = s
			}
			p := point{at: o.at, desired: ri.Desired, ready: ri.Ready, rps: math.NaN(), errRPS: math.NaN(),
				p50: math.NaN(), p95: math.NaN(), err5xx: errs[k]}
			if l := lat[k]; l != nil {
				p.lat = *l
			}
			var prev *point
			if n := len(s.points); n > 0 {
				prev = &s.points[n-1]
			}
			// Requests per second per gateway, from its counter: a gateway that restarted
			// (its counter went back) or is new this sample is left out of the sum.
			var rps float64
			known := false
			totals := map[string]uint64{}
			for _, g := range gauges[k] {
				p.inFlight += g.inFlight
				p.queued += g.queued
				p.held += g.held
				totals[g.id] = g.total
				if was, ok := s.gwTotals[g.id]; ok && prev != nil && g.total >= was {
					rps += float64(g.total-was) / o.at.Sub(prev.at).Seconds()
					known = true
				}
			}
			s.gwTotals = totals
			if known {
				p.rps = rps
			}
			if prev != nil && p.err5xx >= prev.err5xx {
				p.errRPS = (p.err5xx - prev.err5xx) / o.at.Sub(prev.at).Seconds()
			}
			if n := len(s.points); n > 0 {
				base := s.points[max(0, n-latencyWindow+1)]
				p.p50, p.p95 = windowQuantile(0.5, base.lat, p.lat), windowQuantile(0.95, base.lat, p.lat)
			}
			if c := cold[k]; c != nil {
				s.coldStart = *c
			}
			if d, ok := decisions[k]; ok {
				if n := len(s.decisions); n == 0 || !sameDecision(s.decisions[n-1].decision, d) {
					s.decisions = append(s.decisions, decisionAt{o.at, d})
					if len(s.decisions) > maxDecisions {
						s.decisions = s.decisions[len(s.decisions)-maxDecisions:]
					}
				}
			}
			s.points = append(s.points, p)
			s.last = o.at
		}
	}
	h.trim(o.at)
}

// sameDecision: the same verdict (the windows' averages move every tick; a change of
// those alone is not a new decision).
func sameDecision(a, b decision) bool {
	return a.Desired == b.Desired && a.Reason == b.Reason && a.Panic == b.Panic && a.Ready == b.Ready
}

type gatewaySample struct {
	id                     string
	inFlight, queued, held int64
	total                  uint64
}

// trim drops points older than keep, and revisions no sample has seen within it.
func (h *history) trim(now time.Time) {
	cut := now.Add(-h.keep)
	for k, s := range h.revs {
		if s.last.Before(cut) {
			delete(h.revs, k)
			continue
		}
		i := sort.Search(len(s.points), func(i int) bool { return !s.points[i].at.Before(cut) })
		if i > 0 {
			s.points = append(s.points[:0:0], s.points[i:]...)
		}
	}
}

// windowQuantile is the q-quantile of the requests observed between the cumulative
// histograms from and to (Prometheus's histogram_quantile over their difference); NaN when
// none was observed or the counters went back.
func windowQuantile(q float64, from, to histogram) float64 {
	if to.bounds == nil {
		return math.NaN()
	}
	d := histogram{bounds: to.bounds, counts: make([]float64, len(to.counts)), count: to.count - from.count}
	for i := range to.counts {
		d.counts[i] = to.counts[i]
		if len(from.counts) == len(to.counts) {
			d.counts[i] -= from.counts[i]
		}
		if d.counts[i] < 0 {
			return math.NaN()
		}
	}
	if from.bounds == nil {
		d.count = to.count
	}
	return quantile(q, d)
}

// quantile is histogram_quantile: linear interpolation within the bucket that holds the
// q-th observation; the highest finite bound when it falls in +Inf.
func quantile(q float64, h histogram) float64 {
	if h.count <= 0 || len(h.bounds) == 0 {
		return math.NaN()
	}
	rank := q * h.count
	lower, below := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			if c == below {
				return h.bounds[i]
			}
			return lower + (h.bounds[i]-lower)*(rank-below)/(c-below)
		}
		lower, below = h.bounds[i], c
	}
	return h.bounds[len(h.bounds)-1]
}
