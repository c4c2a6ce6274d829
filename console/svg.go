package console

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
	"time"
)

// The charts are SVG strings built here, on the server: no chart library, no build step,
// and a page that shows everything even with scripts off.

// line is one series of a chart, aligned with the chart's times.
type line struct {
	Name, Color string
	Values      []float64 // NaN = no value (a gap)
}

// Chart geometry, in SVG user units (the page scales them).
const (
	chartW, chartH         = 360, 136
	padL, padR, padT, padB = 44, 8, 20, 34
)

// colour i of the palette that colours revisions and series (Tableau's ten, which stay
// apart for most colour-blind readers).
func colour(i int) string {
	p := [...]string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"}
	return p[i%len(p)]
}

// lineChart draws lines over [from, to]; the axis reaches at least floor. format prints a
// value with its unit.
func lineChart(id, title string, times []time.Time, from, to time.Time, lines []line, floor float64, format func(float64) string) template.HTML {
	var b strings.Builder
	top := 0.0
	for _, l := range lines {
		for _, v := range l.Values {
			if !math.IsNaN(v) && v > top {
				top = v
			}
		}
	}
	top = niceCeil(max(top, floor))
	span := to.Sub(from).Seconds()
	x := func(t time.Time) float64 {
		if span <= 0 {
			return padL
		}
		return padL + (chartW-padL-padR)*t.Sub(from).Seconds()/span
	}
	y := func(v float64) float64 { return padT + (chartH-padT-padB)*(1-v/top) }
	fmt.Fprintf(&b, `<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" role="img" aria-label="%s"><title>%s</title>`,
		esc(id), chartW, chartH, esc(title), esc(title))
	fmt.Fprintf(&b, `<text class="ct" x="%d" y="12">%s</text>`, padL, esc(title))
	for _, f := range []float64{0, 0.5, 1} {
		yy := y(top * f)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, yy, yy)
		fmt.Fprintf(&b, `<text class="ax" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-3, yy+3, esc(format(top*f)))
	}
	fmt.Fprintf(&b, `<text class="ax" x="%d" y="%d">-%s</text><text class="ax" x="%d" y="%d" text-anchor="end">now</text>`,
		padL, chartH-padB+11, esc(shortDuration(to.Sub(from))), chartW-padR, chartH-padB+11)
	for li, l := range lines {
		var path strings.Builder
		pen := false
		var lone []int // points with no neighbour: a dot, or they would not show
		for i, v := range l.Values {
			if i >= len(times) {
				break
			}
			if math.IsNaN(v) {
				pen = false
				continue
			}
			cmd := "L"
			if !pen {
				cmd = "M"
				if i+1 >= len(l.Values) || math.IsNaN(l.Values[i+1]) {
					lone = append(lone, i)
				}
			}
			fmt.Fprintf(&path, "%s%.1f %.1f", cmd, x(times[i]), y(v))
			pen = true
		}
		if path.Len() > 0 {
			fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.6"/>`, path.String(), l.Color)
		}
		for _, i := range lone {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.8" fill="%s"/>`, x(times[i]), y(l.Values[i]), l.Color)
		}
		last := "–"
		for i := len(l.Values) - 1; i >= 0; i-- {
			if !math.IsNaN(l.Values[i]) {
				last = format(l.Values[i])
				break
			}
		}
		fmt.Fprintf(&b, `<text class="lg" x="%d" y="%d"><tspan style="fill:%s">■</tspan> %s %s</text>`, padL+li*105, chartH-6, l.Color, esc(l.Name), esc(last))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// histogramChart draws a histogram's buckets (not cumulative), a bar per bucket.
func histogramChart(id, title string, h histogram) template.HTML {
	var b strings.Builder
	n := len(h.bounds) + 1 // and +Inf
	counts := make([]float64, n)
	prev, top := 0.0, 0.0
	for i := range h.bounds {
		counts[i] = h.counts[i] - prev
		prev = h.counts[i]
	}
	counts[n-1] = h.count - prev
	for _, c := range counts {
		top = max(top, c)
	}
	top = niceCeil(max(top, 1))
	bw := float64(chartW-padL-padR) / float64(n)
	fmt.Fprintf(&b, `<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" role="img" aria-label="%s"><title>%s</title>`,
		esc(id), chartW, chartH, esc(title), esc(title))
	fmt.Fprintf(&b, `<text class="ct" x="%d" y="12">%s</text>`, padL, esc(title))
	for _, f := range []float64{0, 1} {
		yy := padT + (chartH-padT-padB)*(1-f)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, yy, yy)
		fmt.Fprintf(&b, `<text class="ax" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-3, yy+3, esc(fmt.Sprint(top*f)))
	}
	for i, c := range counts {
		label := "+Inf"
		if i < len(h.bounds) {
			label = "≤" + seconds(h.bounds[i])
		}
		hgt := 0.0
		if top > 0 {
			hgt = float64(chartH-padT-padB) * c / top
		}
		xx := padL + float64(i)*bw
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %g</title></rect>`,
			xx+1, float64(chartH-padB)-hgt, bw-2, hgt, colour(0), esc(label), c)
		if i%3 == 0 || i == n-1 {
			fmt.Fprintf(&b, `<text class="ax" x="%.1f" y="%d" text-anchor="middle">%s</text>`, xx+bw/2, chartH-padB+11, esc(label))
		}
	}
	fmt.Fprintf(&b, `<text class="lg" x="%d" y="%d">%g waits, p50 %s, p95 %s</text>`, padL, chartH-6, h.count,
		seconds(quantile(0.5, h)), seconds(quantile(0.95, h)))
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// splitBar is a service's traffic split as one stacked bar.
func splitBar(parts []splitPart) template.HTML {
	var b strings.Builder
	const w, h = 160, 14
	fmt.Fprintf(&b, `<svg class="split" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="traffic split">`, w, h, w, h)
	x := 0.0
	for _, p := range parts {
		pw := float64(w) * float64(p.Percent) / 100
		fmt.Fprintf(&b, `<rect x="%.1f" y="0" width="%.1f" height="%d" fill="%s"><title>%s %d%%</title></rect>`, x, pw, h, p.Colour, esc(p.Revision), p.Percent)
		x += pw
	}
	if x == 0 {
		fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ddd"><title>no route</title></rect>`, w, h)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func esc(s string) string { return html.EscapeString(s) }

// niceCeil rounds up to 1, 2 or 5 times a power of ten, so the axis reads well.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// seconds prints a duration given in seconds: "180ms", "1.5s"; "–" for NaN.
func seconds(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v == 0:
		return "0"
	case v < 0.001:
		return fmt.Sprintf("%.2fms", v*1000)
	case v < 1:
		return fmt.Sprintf("%.0fms", v*1000)
	}
	return fmt.Sprintf("%.3gs", v)
}

func shortDuration(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return d.Round(time.Second).String()
}
