package console

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/store"
)

// reader is what the console reads through the control plane, exactly as `rouse list` and
// `rouse describe` do (so it needs the same tokens and gets the same denials).
type reader interface {
	List(ctx context.Context, ns string) ([]control.ServiceSummary, error)
	Describe(ctx context.Context, ns, svc string) (*control.ServiceDetail, error)
	Failures(ctx context.Context, ns string) ([]store.Failure, error)
	Gateways(ctx context.Context) ([]control.Daemon, error)
	Scalers(ctx context.Context) ([]control.Daemon, error)
	JournalIndex(ctx context.Context) (uint64, error)
}

var _ reader = (*control.Client)(nil)

// revKey names a revision across namespaces.
type revKey struct{ ns, rev string }

// histogram is one cumulative Prometheus histogram: counts[i] requests took ≤ bounds[i]
// (the +Inf bucket is count).
type histogram struct {
	bounds []float64
	counts []float64
	count  float64
	sum    float64
}

// add sums h2 into h (the same series from another gateway has the same buckets).
func (h *histogram) add(h2 histogram) {
	if h.bounds == nil {
		h.bounds = h2.bounds
		h.counts = make([]float64, len(h2.bounds))
	}
	if len(h2.counts) != len(h.counts) {
		return // a gateway of another version with other buckets: left out
	}
	for i, c := range h2.counts {
		h.counts[i] += c
	}
	h.count += h2.count
	h.sum += h2.sum
}

// gatewayRead is what one gateway's admin listener said in one sample.
type gatewayRead struct {
	daemon    control.Daemon
	err       error
	gauges    map[revKey]gauges.Revision
	latency   map[revKey]histogram // rouse_gateway_request_duration_seconds
	coldStart map[revKey]histogram // rouse_gateway_cold_start_wait_seconds
	errors5xx map[revKey]float64   // rouse_gateway_requests_total{code=~"5.."}
}

// decision is one row of a scaler's /decisions: the last tick's verdict on a revision.
type decision struct {
	Ready, Desired int
	Reason         string
	Panic          bool
	Stable, PanicV float64 // the windows' averages of the revision's metric
	Target         string  // "100×70%"
}

// scalerRead is what one scaler replica said in one sample.
type scalerRead struct {
	daemon    control.Daemon
	err       error
	leader    bool
	decisions map[revKey]decision
}

// admin reads the daemons' admin listeners.
type admin struct{ http *http.Client }

func (a admin) get(ctx context.Context, addr, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s%s: %s", addr, path, resp.Status)
	}
	return resp.Body, nil
}

func (a admin) gateway(ctx context.Context, d control.Daemon) gatewayRead {
	r := gatewayRead{daemon: d}
	body, err := a.get(ctx, d.AdminAddr, "/gauges")
	if err != nil {
		r.err = err
		return r
	}
	rep, err := gauges.Read(body)
	body.Close()
	if err != nil {
		r.err = err
		return r
	}
	r.gauges = make(map[revKey]gauges.Revision, len(rep.Revisions))
	for _, v := range rep.Revisions {
		r.gauges[revKey{v.Namespace, v.Revision}] = v
	}
	body, err = a.get(ctx, d.AdminAddr, "/metrics")
	if err != nil {
		r.err = err
		return r
	}
	defer body.Close()
	fams, err := parseMetrics(body)
	if err != nil {
		r.err = err
		return r
	}
	r.latency = histograms(fams["rouse_gateway_request_duration_seconds"])
	r.coldStart = histograms(fams["rouse_gateway_cold_start_wait_seconds"])
	r.errors5xx = map[revKey]float64{}
	if f := fams["rouse_gateway_requests_total"]; f != nil {
		for _, m := range f.GetMetric() {
			if l := labels(m); strings.HasPrefix(l["code"], "5") {
				r.errors5xx[revKey{l["namespace"], l["revision"]}] += m.GetCounter().GetValue()
			}
		}
	}
	return r
}

func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return fams, nil
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// histograms are a family's histograms by revision.
func histograms(f *dto.MetricFamily) map[revKey]histogram {
	out := map[revKey]histogram{}
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		l := labels(m)
		ph := m.GetHistogram()
		h := histogram{count: float64(ph.GetSampleCount()), sum: ph.GetSampleSum()}
		for _, b := range ph.GetBucket() {
			if math.IsInf(b.GetUpperBound(), 1) {
				continue
			}
			h.bounds = append(h.bounds, b.GetUpperBound())
			h.counts = append(h.counts, float64(b.GetCumulativeCount()))
		}
		out[revKey{l["namespace"], l["revision"]}] = h
	}
	return out
}

func (a admin) scaler(ctx context.Context, d control.Daemon) scalerRead {
	r := scalerRead{daemon: d}
	body, err := a.get(ctx, d.AdminAddr, "/healthz")
	if err != nil {
		r.err = err
		return r
	}
	hz, _ := io.ReadAll(io.LimitReader(body, 1024))
	body.Close()
	r.leader = strings.HasSuffix(strings.TrimSpace(string(hz)), " leader")
	if !r.leader {
		return r // a standby decides nothing: its table is stale
	}
	body, err = a.get(ctx, d.AdminAddr, "/decisions")
	if err != nil {
		r.err = err
		return r
	}
	defer body.Close()
	r.decisions, r.err = parseDecisions(body)
	return r
}

// parseDecisions reads the scaler's /decisions table (scaler/metrics.go writeDecisions):
// REVISION READY DESIRED REASON PANIC STABLE PANIC-WINDOW TARGET EBC.
func parseDecisions(r io.Reader) (map[revKey]decision, error) {
	out := map[revKey]decision{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if line == 1 || len(f) == 0 {
			continue // the header
		}
		if len(f) < 8 {
			return out, fmt.Errorf("decisions: line %d: want 9 fields, got %d", line, len(f))
		}
		ns, rev, ok := strings.Cut(f[0], "/")
		if !ok {
			return out, fmt.Errorf("decisions: line %d: %q is not <namespace>/<revision>", line, f[0])
		}
		var d decision
		var errs []error
		num := func(s string) float64 {
			v, err := strconv.ParseFloat(s, 64)
			errs = append(errs, err)
			return v
		}
		d.Ready, d.Desired = int(num(f[1])), int(num(f[2]))
		d.Reason, d.Panic = f[3], f[4] == "true"
		d.Stable, d.PanicV, d.Target = num(f[5]), num(f[6]), f[7]
		if err := errors.Join(errs...); err != nil {
			return out, fmt.Errorf("decisions: line %d: %w", line, err)
		}
		out[revKey{ns, rev}] = d
	}
	return out, sc.Err()
}

// adminClient is the HTTP client for the admin listeners: short timeouts, so one daemon
// that hangs costs a sample one second, not the whole interval.
func adminClient() *http.Client {
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
}
