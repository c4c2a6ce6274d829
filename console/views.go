package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rouse-run/rouse/control"
)

// The pages' templates and their one stylesheet and script, compiled into the binary.
//
//go:embed templates/*.html static/*
var assets embed.FS

// parsePages parses each page with the shared layout.
func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"clock": func(t time.Time) string { return t.Format("15:04:05") },
		"ago": func(t, now time.Time) string {
			if t.IsZero() {
				return "–"
			}
			return shortDuration(now.Sub(t).Round(time.Second)) + " ago"
		},
		"join": strings.Join,
		"dur":  shortDuration,
		"dash": func(s string) string {
			if s == "" {
				return "–"
			}
			return s
		},
	}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"index", "service"} {
		t, err := template.Must(base.Clone()).ParseFS(assets, "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}

// Handler serves the pages: / (services, gateways, scalers, failures), /services/<ns>/<name>
// (a service and each revision's charts), /static/… and /healthz. A page asked for with
// ?fragment=1 is its live part only, which the script swaps in.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		p := c.indexPage()
		c.mu.Unlock()
		c.render(w, r, "index", p)
	})
	mux.HandleFunc("GET /services/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		p := c.servicePage(r.PathValue("ns"), r.PathValue("name"))
		c.mu.Unlock()
		if p.Service == nil {
			w.WriteHeader(http.StatusNotFound)
		}
		c.render(w, r, "service", p)
	})
	return mux
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, p *page) {
	tmpl := "layout"
	if r.URL.Query().Get("fragment") != "" {
		tmpl = "live"
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, tmpl, p); err != nil {
		http.Error(w, "console: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// page is what a template renders.
type page struct {
	Title     string
	Scope     string
	At        time.Time // the sample shown; zero before the first
	Every     time.Duration
	Keep      time.Duration
	RefreshMS int64
	Problems  []problem
	Denied    bool

	Services []serviceRow
	More     int
	Gateways []gatewayRow
	Journal  uint64
	Scalers  []scalerRow
	Failures []failureRow

	Service *serviceView // the service page; nil when not found
	Want    string       // the service page's ns/name
}

type serviceRow struct {
	Namespace, Name, Link, URL string
	Ready, Latest, LatestReady string
	Split                      []splitPart
	SplitBar                   template.HTML
	Tags                       []control.TagInfo
	ReadyInstances             int
	DesiredInstances           int
	RPS, P95                   string
	Described                  bool
}

// splitPart is one revision's share of a service's traffic.
type splitPart struct {
	Revision string
	Percent  int
	Tag      string
	Colour   string
}

type gatewayRow struct {
	control.Daemon
	Err       string
	Lagging   bool
	Revisions int
	InFlight  int64
	Held      int64
}

type scalerRow struct {
	control.Daemon
	Err       string
	Leader    bool
	Decisions int
}

type failureRow struct {
	At                           time.Time
	Namespace, Service, Revision string
	Kind                         string // "wake" (the scaler's record) or "revision" (a stopped revision)
	Reason                       string
	RetryAt                      time.Time
	Attempt                      int
}

type serviceView struct {
	Row        serviceRow
	Detail     *control.ServiceDetail
	Revisions  []revisionView
	Conditions []control.Condition
}

type revisionView struct {
	Info                                       control.RevisionInfo
	Colour                                     string
	Instances, RPS, Latency, Concurrency, Cold template.HTML
	Now                                        pointView
	Decisions                                  []decisionRow
	Sampled                                    bool
}

type pointView struct{ RPS, ErrRPS, P50, P95, InFlight, Queued, Held string }

type decisionRow struct {
	At time.Time
	decision
	Stable, PanicV string
}

func (c *Console) basePage(title string) *page {
	o := c.hist.latest
	p := &page{Title: title, Scope: "namespace " + c.cfg.Namespace, At: o.at, Every: c.cfg.Interval, Keep: c.cfg.History,
		RefreshMS: c.cfg.Interval.Milliseconds(), Problems: o.problems}
	if c.cfg.Namespace == "" {
		p.Scope = "every namespace"
	}
	for _, pr := range o.problems {
		p.Denied = p.Denied || pr.Denied
	}
	return p
}

func (c *Console) indexPage() *page {
	p := c.basePage("Services")
	o := c.hist.latest
	p.More, p.Journal = o.more, o.journal
	for _, sr := range o.services {
		p.Services = append(p.Services, c.serviceRow(sr))
	}
	for _, g := range o.gateways {
		row := gatewayRow{Daemon: g.daemon, Revisions: len(g.gauges)}
		if g.err != nil {
			row.Err = g.err.Error()
		}
		row.Lagging = o.journal > 0 && g.daemon.RoutesIndex > 0 && g.daemon.RoutesIndex < o.journal
		for _, v := range g.gauges {
			row.InFlight += v.InFlight
			row.Held += v.Held
		}
		p.Gateways = append(p.Gateways, row)
	}
	for _, s := range o.scalers {
		row := scalerRow{Daemon: s.daemon, Leader: s.leader, Decisions: len(s.decisions)}
		if s.err != nil {
			row.Err = s.err.Error()
		}
		p.Scalers = append(p.Scalers, row)
	}
	p.Failures = c.failures()
	return p
}

// failures are the scaler's wake-failure records and the revisions that failed to become
// ready (stopped), newest first.
func (c *Console) failures() []failureRow {
	o := c.hist.latest
	svcOf := map[revKey]string{}
	var out []failureRow
	for _, sr := range o.services {
		if sr.detail == nil {
			continue
		}
		for _, r := range sr.detail.Revisions {
			svcOf[revKey{sr.summary.Namespace, r.Name}] = sr.summary.Name
			if r.Status == control.RevisionFailed {
				out = append(out, failureRow{At: r.Created, Namespace: sr.summary.Namespace, Service: sr.summary.Name,
					Revision: r.Name, Kind: "revision", Reason: r.Reason})
			}
		}
	}
	for _, f := range o.failures {
		out = append(out, failureRow{At: f.At, Namespace: f.Namespace, Service: svcOf[revKey{f.Namespace, f.Revision}],
			Revision: f.Revision, Kind: "wake", Reason: f.Reason, RetryAt: f.RetryAt, Attempt: f.Attempt})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out
}

func (c *Console) serviceRow(sr serviceRead) serviceRow {
	s := sr.summary
	row := serviceRow{Namespace: s.Namespace, Name: s.Name, Link: "/services/" + s.Namespace + "/" + s.Name, URL: s.URL,
		Ready: s.Ready, Latest: s.Latest, LatestReady: s.LatestReady, Described: sr.detail != nil}
	colours := map[string]string{}
	if sr.detail != nil {
		row.Ready, row.Tags = sr.detail.Ready, sr.detail.Tags
		// A revision keeps its colour on every chart: its place among the service's
		// revisions, oldest first.
		for i := range sr.detail.Revisions {
			r := sr.detail.Revisions[len(sr.detail.Revisions)-1-i]
			colours[r.Name] = colour(i)
		}
		rps, p95, any := 0.0, math.NaN(), false
		for _, r := range sr.detail.Revisions {
			row.ReadyInstances += r.Ready
			row.DesiredInstances += r.Desired
			if last, ok := c.lastPoint(revKey{s.Namespace, r.Name}); ok {
				if !math.IsNaN(last.rps) {
					rps, any = rps+last.rps, true
				}
				if !math.IsNaN(last.p95) && (math.IsNaN(p95) || last.p95 > p95) {
					p95 = last.p95
				}
			}
		}
		row.RPS, row.P95 = "–", seconds(p95)
		if any {
			row.RPS = rate(rps)
		}
	}
	for _, t := range s.Route {
		if t.Percent > 0 {
			col, ok := colours[t.Revision]
			if !ok {
				col = "#999"
			}
			row.Split = append(row.Split, splitPart{Revision: t.Revision, Percent: t.Percent, Tag: t.Tag, Colour: col})
		}
	}
	row.SplitBar = splitBar(row.Split)
	return row
}

func (c *Console) lastPoint(k revKey) (point, bool) {
	s := c.hist.revs[k]
	if s == nil || len(s.points) == 0 {
		return point{}, false
	}
	return s.points[len(s.points)-1], true
}

func (c *Console) servicePage(ns, name string) *page {
	p := c.basePage(ns + "/" + name)
	p.Want = ns + "/" + name
	o := c.hist.latest
	for _, sr := range o.services {
		if sr.summary.Namespace != ns || sr.summary.Name != name {
			continue
		}
		v := &serviceView{Row: c.serviceRow(sr), Detail: sr.detail}
		if sr.detail != nil {
			v.Conditions = sr.detail.Conditions
			for i, ri := range sr.detail.Revisions {
				v.Revisions = append(v.Revisions, c.revisionView(ns, ri, colour(len(sr.detail.Revisions)-1-i)))
			}
		}
		p.Service = v
	}
	return p
}

func (c *Console) revisionView(ns string, ri control.RevisionInfo, col string) revisionView {
	v := revisionView{Info: ri, Colour: col, Now: pointView{"–", "–", "–", "–", "–", "–", "–"}}
	s := c.hist.revs[revKey{ns, ri.Name}]
	if s == nil || len(s.points) == 0 {
		return v
	}
	v.Sampled = true
	// The time axis spans the history kept, or what there is of it since the console started.
	to := c.hist.latest.at
	from := to.Add(-c.cfg.History)
	if c.hist.first.After(from) {
		from = c.hist.first
	}
	n := len(s.points)
	times := make([]time.Time, n)
	vals := func(f func(point) float64) []float64 {
		out := make([]float64, n)
		for i, pt := range s.points {
			out[i] = f(pt)
		}
		return out
	}
	for i, pt := range s.points {
		times[i] = pt.at
	}
	count := func(f float64) string { return fmt.Sprintf("%g", f) }
	ms := func(f float64) string { return seconds(f) }
	rid := ri.Name
	v.Instances = lineChart(rid+"-instances", "instances", times, from, to, []line{
		{"desired", colour(0), vals(func(p point) float64 { return float64(p.desired) })},
		{"ready", colour(2), vals(func(p point) float64 { return float64(p.ready) })},
	}, 1, count)
	v.RPS = lineChart(rid+"-rps", "requests per second", times, from, to, []line{
		{"rps", colour(0), vals(func(p point) float64 { return p.rps })},
		{"5xx/s", colour(3), vals(func(p point) float64 { return p.errRPS })},
	}, 1, rate)
	v.Latency = lineChart(rid+"-latency", "latency (10 s window)", times, from, to, []line{
		{"p50", colour(0), vals(func(p point) float64 { return p.p50 })},
		{"p95", colour(1), vals(func(p point) float64 { return p.p95 })},
	}, 0.001, ms)
	v.Concurrency = lineChart(rid+"-concurrency", "requests in the gateway", times, from, to, []line{
		{"in flight", colour(0), vals(func(p point) float64 { return float64(p.inFlight) })},
		{"queued", colour(4), vals(func(p point) float64 { return float64(p.queued) })},
		{"held", colour(3), vals(func(p point) float64 { return float64(p.held) })},
	}, 1, count)
	v.Cold = histogramChart(rid+"-cold", "cold-start waits (since the gateway started)", s.coldStart)
	last := s.points[n-1]
	v.Now = pointView{RPS: rate(last.rps), ErrRPS: rate(last.errRPS), P50: seconds(last.p50), P95: seconds(last.p95),
		InFlight: fmt.Sprint(last.inFlight), Queued: fmt.Sprint(last.queued), Held: fmt.Sprint(last.held)}
	for i := len(s.decisions) - 1; i >= 0; i-- {
		d := s.decisions[i]
		v.Decisions = append(v.Decisions, decisionRow{At: d.at, decision: d.decision,
			Stable: fmt.Sprintf("%.1f", d.Stable), PanicV: fmt.Sprintf("%.1f", d.PanicV)})
	}
	return v
}

// rate prints a per-second rate; "–" for NaN.
func rate(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v == 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}
