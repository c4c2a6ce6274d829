package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// The plot is SVG written by hand: three panels over one time axis (load, instances,
// latency), no dependency, readable in any browser and in a README.

const (
	svgW       = 960
	padLeft    = 70
	padRight   = 200 // the legends sit right of the panels
	headerH    = 100
	panelH     = 180
	panelGap   = 52
	footerH    = 44
	plotW      = svgW - padLeft - padRight
	svgH       = headerH + 3*panelH + 2*panelGap + footerH
	fontFamily = "Helvetica, Arial, sans-serif"
)

type series struct {
	name  string
	color string
	dash  bool
	bars  bool      // drawn as bars from zero (errors)
	steps bool      // a count: drawn flat within each second, with vertical jumps
	ys    []float64 // one per second; NaN = no value
}

type panel struct {
	title  string
	top    float64
	ymax   float64
	series []series
	hline  float64 // a dashed reference line (the SLA); 0 = none
	hlabel string
	// clipped counts values above ymax, drawn at the top edge.
	clipped int
}

// writeSVG draws the report.
func writeSVG(w io.Writer, r *report) error {
	n := len(r.Rows)
	col := func(f func(row) float64) []float64 {
		out := make([]float64, n)
		for i, x := range r.Rows {
			out[i] = f(x)
		}
		return out
	}
	msOf := func(d time.Duration, ok int) float64 {
		if ok == 0 {
			return math.NaN()
		}
		return float64(d) / float64(time.Millisecond)
	}
	inst := func(v int) float64 {
		if v < 0 {
			return math.NaN()
		}
		return float64(v)
	}
	load := panel{title: "Load (requests per second)", top: headerH, series: []series{
		{name: "target", color: "#9e9e9e", dash: true, steps: true, ys: col(func(x row) float64 { return x.Target })},
		{name: "offered", color: "#1f77b4", ys: col(func(x row) float64 { return float64(x.Offered) })},
		{name: "achieved (2xx)", color: "#2ca02c", ys: col(func(x row) float64 { return float64(x.Achieved) })},
		{name: "errors + shed", color: "#d62728", bars: true, ys: col(func(x row) float64 { return float64(x.Errors + x.Shed) })},
	}}
	instances := panel{title: "Instances (Nomad)", top: headerH + panelH + panelGap, series: []series{
		{name: "desired (group count)", color: "#ff7f0e", steps: true, ys: col(func(x row) float64 { return inst(x.Desired) })},
		{name: "ready (running allocs)", color: "#9467bd", steps: true, dash: true, ys: col(func(x row) float64 { return inst(x.Ready) })},
	}}
	if r.NewRevision != "" {
		instances.title = "Instances (Nomad): old revision, and " + r.NewRevision + " from the rollout"
		instances.series[0].name, instances.series[1].name = "old desired", "old ready"
		instances.series = append(instances.series,
			series{name: "new desired", color: "#8c564b", steps: true, ys: col(func(x row) float64 { return inst(x.NewDesired) })},
			series{name: "new ready", color: "#e377c2", steps: true, dash: true, ys: col(func(x row) float64 { return inst(x.NewReady) })})
	}
	latency := panel{title: "Latency of 2xx answers by second sent (ms)", top: headerH + 2*(panelH+panelGap),
		hline: float64(r.sla()) / float64(time.Millisecond), hlabel: fmt.Sprintf("SLA p95 ≤ %s ms", ms(r.sla())),
		series: []series{
			{name: "p50", color: "#17becf", ys: col(func(x row) float64 { return msOf(x.P50, x.OK) })},
			{name: "p95", color: "#d62728", ys: col(func(x row) float64 { return msOf(x.P95, x.OK) })},
		}}
	for _, p := range []*panel{&load, &instances} {
		for _, s := range p.series {
			p.ymax = math.Max(p.ymax, maxOf(s.ys))
		}
	}
	load.ymax = niceCeil(math.Max(load.ymax, 10))
	instances.ymax = niceCeil(math.Max(instances.ymax, 4))
	// Latency: one cold-start second should not flatten the rest. The axis reaches twice
	// the median p95 (or the highest value, if lower), and always shows the SLA line;
	// higher values are drawn at the top edge and counted in the title.
	p95 := latency.series[1].ys
	latency.ymax = niceCeil(math.Max(latency.hline*1.3, math.Min(maxOf(p95)*1.05, 2*quantile(p95, 0.5))))
	for _, s := range latency.series {
		for _, v := range s.ys {
			if v > latency.ymax {
				latency.clipped++
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s" font-size="12">`+"\n",
		svgW, svgH, svgW, svgH, fontFamily)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", padLeft, esc(r.Title))
	fmt.Fprintf(&b, `<text x="%d" y="44" fill="#444">%s</text>`+"\n", padLeft, esc(r.Load))
	fmt.Fprintf(&b, `<text x="%d" y="62" fill="#444">%s</text>`+"\n", padLeft, esc(subtitle(r)))
	for _, p := range []*panel{&load, &instances, &latency} {
		drawPanel(&b, p, r.Steps, n)
		drawEvents(&b, p, r.Events, n, p == &load)
	}
	// The shared time axis under the last panel.
	xt := niceStep(float64(n), 12)
	axisY := latency.top + panelH
	for t := 0.0; t <= float64(n); t += xt {
		x := xAt(t, n)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%g</text>`+"\n", x, axisY+16, t)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="middle" fill="#444">seconds since the load started</text>`+"\n",
		padLeft+plotW/2, axisY+36)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func subtitle(r *report) string {
	d, rd := r.maxInstances()
	s := fmt.Sprintf("errors %d · shed %d · p95 %s ms overall · max %d desired / %d ready instances · cold start %s ms",
		r.All.Errors, r.All.Shed, ms(r.All.P95), d, rd, ms(r.ColdStart))
	return s
}

func drawPanel(b *strings.Builder, p *panel, steps []step, n int) {
	top, bottom := p.top, p.top+panelH
	// Step bands, shaded alternately and labelled with their rate.
	for i, s := range steps {
		x0, x1 := xAt(float64(s.From), n), xAt(float64(s.To), n)
		if i%2 == 0 {
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="#f3f6fa"/>`+"\n", x0, top, x1-x0, panelH)
		}
	}
	title := p.title
	if p.clipped > 0 {
		title += fmt.Sprintf(" — %d value(s) above %g ms drawn at the top", p.clipped, p.ymax)
	}
	fmt.Fprintf(b, `<text x="%d" y="%.1f" font-weight="bold">%s</text>`+"\n", padLeft, top-10, esc(title))
	// Grid and y labels.
	yt := niceStep(p.ymax, 5)
	for v := 0.0; v <= p.ymax+1e-9; v += yt {
		y := yAt(v, p.ymax, top)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>`+"\n", padLeft, y, padLeft+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#444">%g</text>`+"\n", padLeft-6, y+4, v)
	}
	xt := niceStep(float64(n), 12)
	for t := 0.0; t <= float64(n); t += xt {
		x := xAt(t, n)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eeeeee"/>`+"\n", x, top, x, bottom)
	}
	if p.title == "Load (requests per second)" {
		for _, s := range steps {
			x0, x1 := xAt(float64(s.From), n), xAt(float64(s.To), n)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#777">%s</text>`+"\n", (x0+x1)/2, top+14, esc(s.label()))
		}
	}
	if p.hline > 0 {
		y := yAt(p.hline, p.ymax, top)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#555" stroke-dasharray="6 4"/>`+"\n", padLeft, y, padLeft+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", padLeft+plotW-4, y-4, esc(p.hlabel))
	}
	for _, s := range p.series {
		if s.bars {
			bw := math.Max(1, float64(plotW)/float64(max(n, 1))*0.8)
			for i, v := range s.ys {
				if v > 0 && !math.IsNaN(v) {
					y := yAt(math.Min(v, p.ymax), p.ymax, top)
					h := math.Max(3, bottom-y)
					fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%ds: %g</title></rect>`+"\n",
						xAt(float64(i)+0.1, n), bottom-h, bw, h, s.color, i, v)
				}
			}
			continue
		}
		for _, pts := range polylines(s.ys, p.ymax, top, n, s.steps) {
			dash := ""
			if s.dash {
				dash = ` stroke-dasharray="5 3"`
			}
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.8"%s points="%s"/>`+"\n", s.color, dash, pts)
		}
	}
	// Frame and legend.
	fmt.Fprintf(b, `<rect x="%d" y="%.1f" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", padLeft, top, plotW, panelH)
	lx := float64(padLeft + plotW + 8)
	for i, s := range p.series {
		y := top + 14 + float64(18*i)
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="5 3"`
		}
		w := 2.0
		if s.bars {
			w = 6
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"%s/>`+"\n", lx+8, y-4, lx+30, y-4, s.color, w, dash)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+36, y, esc(s.name))
	}
}

// drawEvents marks each event with a vertical line across the panel, labelled in the first.
func drawEvents(b *strings.Builder, p *panel, events []event, n int, label bool) {
	for i, e := range events {
		x := xAt(e.At, n)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" stroke-dasharray="2 3"/>`+"\n", x, p.top, x, p.top+panelH)
		if label {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#000">%s</text>`+"\n", x+3, p.top+30+float64(14*i), esc(e.Label))
		}
	}
}

// polylines turns a series into "x,y x,y" runs, split where values are missing. Each value
// is drawn at the middle of its second, or across its whole second for steps.
func polylines(ys []float64, ymax, top float64, n int, steps bool) []string {
	var out []string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.Join(cur, " "))
			cur = nil
		}
	}
	for i, v := range ys {
		if math.IsNaN(v) {
			flush()
			continue
		}
		y := yAt(math.Min(v, ymax), ymax, top)
		if steps {
			cur = append(cur, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", xAt(float64(i), n), y, xAt(float64(i+1), n), y))
			continue
		}
		cur = append(cur, fmt.Sprintf("%.1f,%.1f", xAt(float64(i)+0.5, n), y))
	}
	flush()
	return out
}

func xAt(t float64, n int) float64 {
	return padLeft + t/float64(max(n, 1))*plotW
}

func yAt(v, ymax, top float64) float64 {
	if ymax <= 0 {
		ymax = 1
	}
	return top + panelH - v/ymax*panelH
}

func maxOf(ys []float64) float64 {
	m := 0.0
	for _, v := range ys {
		if !math.IsNaN(v) {
			m = math.Max(m, v)
		}
	}
	return m
}

// quantile of the values present (q in [0,1]); 0 when there are none.
func quantile(ys []float64, q float64) float64 {
	var v []float64
	for _, y := range ys {
		if !math.IsNaN(y) {
			v = append(v, y)
		}
	}
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[min(max(i, 0), len(v)-1)]
}

// niceStep is a 1, 2 or 5 × 10^k step that cuts span into about n parts.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// niceCeil rounds v up to a multiple of its nice step, so the top grid line is labelled.
func niceCeil(v float64) float64 {
	s := niceStep(v, 5)
	return math.Ceil(v/s) * s
}

func esc(s string) string { return html.EscapeString(s) }
