package main

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/examples/loadtest/loadgen"
)

// synthetic is a 30 s run of three 10 s steps: a cold first second, instances following
// the load, one error in the last step.
func synthetic(withError bool) *report {
	r := &report{Title: "test <run> & more", Load: "load: 300 → 600 → 900 rps", Started: time.Unix(0, 0), ColdStart: 240 * time.Millisecond, ColdRequests: 70,
		All: loadgen.Totals{Offered: 18000, OK: 18000, P50: 101 * time.Millisecond, P95: 104 * time.Millisecond}}
	rates := []float64{300, 600, 900}
	for i := 0; i < 35; i++ {
		target := 0.0
		if i < 30 {
			target = rates[i/10]
		}
		x := row{Second: loadgen.Second{T: i, Offered: int(target), OK: int(target), Achieved: int(target),
			P50: 101 * time.Millisecond, P95: 104 * time.Millisecond}, Target: target,
			Desired: int(math.Ceil(target * 0.1 / 7)), Ready: int(math.Ceil(target * 0.1 / 7))}
		if i == 0 {
			x.P95, x.Max, x.Ready = 900*time.Millisecond, 950*time.Millisecond, 0
		}
		if i == 12 {
			x.Desired, x.Ready = -1, -1 // a missed Nomad sample
		}
		if withError && i == 25 {
			x.Errors = 1
		}
		r.Rows = append(r.Rows, x)
	}
	for i, rps := range rates {
		s := step{RPS: rps, From: i * 10, To: (i + 1) * 10}
		r.Steps = append(r.Steps, s)
		r.Stats = append(r.Stats, stepStats{step: s, Totals: loadgen.Totals{Offered: int(rps) * 10, OK: int(rps) * 10,
			P50: 101 * time.Millisecond, P95: 105 * time.Millisecond}, MaxDesired: int(rps) / 70, MaxReady: int(rps) / 70})
	}
	if withError {
		r.All.Errors = 1
		r.All.Codes = map[int]int{503: 1}
		r.Errors = map[string]int{"HTTP 503": 1}
	}
	return r
}

func TestSVGIsWellFormed(t *testing.T) {
	var buf bytes.Buffer
	if err := writeSVG(&buf, synthetic(true)); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("LOADTEST_WRITE_SVG") != "" { // to look at it: LOADTEST_WRITE_SVG=/tmp/x.svg
		_ = os.WriteFile(os.Getenv("LOADTEST_WRITE_SVG"), buf.Bytes(), 0o644)
	}
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	counts := map[string]int{}
	var texts []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, buf.String())
		}
		switch v := tok.(type) {
		case xml.StartElement:
			counts[v.Name.Local]++
		case xml.CharData:
			texts = append(texts, string(v))
		}
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"test <run> & more", "load: 300 → 600 → 900 rps", "Load (requests per second)", "Instances (Nomad)", "SLA p95 ≤ 115.0 ms", "300 rps", "900 rps", "p95", "ready (running allocs)"} {
		if !strings.Contains(all, want) {
			t.Errorf("plot text lacks %q", want)
		}
	}
	// The cold second (900 ms) is above the latency axis: drawn at the top and said so.
	if !strings.Contains(all, "value(s) above") {
		t.Errorf("the clipped cold-start second is not reported")
	}
	// Lines: target, offered, achieved, p50, p95, and the instance series split in two by
	// the missing sample.
	if counts["polyline"] != 3+2+2*2 {
		t.Errorf("got %d polylines, want 9", counts["polyline"])
	}
	if counts["svg"] != 1 {
		t.Errorf("got %d svg elements", counts["svg"])
	}
}

func TestCSV(t *testing.T) {
	var buf bytes.Buffer
	r := synthetic(false)
	if err := writeCSV(&buf, r.Rows, false); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(r.Rows)+1 {
		t.Fatalf("%d records for %d rows", len(recs), len(r.Rows))
	}
	if got := strings.Join(recs[0], ","); got != "t_s,target_rps,offered,achieved_rps,ok,errors,shed,p50_ms,p95_ms,p99_ms,max_ms,desired_instances,ready_instances" {
		t.Errorf("header %s", got)
	}
	if got := strings.Join(recs[1], ","); got != "0,300,300,300,300,0,0,101.0,900.0,0.0,950.0,5,0" {
		t.Errorf("first row %s", got)
	}
}

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		withError bool
		verdict   string
	}{{false, "PASS"}, {true, "MISS"}} {
		var buf bytes.Buffer
		if err := writeSummary(&buf, synthetic(tc.withError)); err != nil {
			t.Fatal(err)
		}
		s := buf.String()
		for _, want := range []string{"300 rps", "600 rps", "900 rps", "max instances: 13 desired, 13 ready",
			"cold start from zero: 70 request(s) held while the first instances started, the first for 240.0 ms", "p95 ≤ 115.0 ms in every step: " + tc.verdict} {
			if !strings.Contains(s, want) {
				t.Errorf("summary lacks %q:\n%s", want, s)
			}
		}
		if tc.withError && !strings.Contains(s, "1×503") {
			t.Errorf("summary does not list the 503:\n%s", s)
		}
	}
}

func TestNiceAxes(t *testing.T) {
	for _, tc := range []struct{ span, step float64 }{{100, 20}, {90, 20}, {900, 200}, {13, 5}, {4, 1}, {0, 1}} {
		if got := niceStep(tc.span, 5); got != tc.step {
			t.Errorf("niceStep(%g, 5) = %g, want %g", tc.span, got, tc.step)
		}
	}
	if got := niceCeil(913); got != 1000 {
		t.Errorf("niceCeil(913) = %g", got)
	}
	if got := quantile([]float64{math.NaN(), 3, 1, 2, 100}, 0.5); got != 2 {
		t.Errorf("quantile = %g", got)
	}
}

// A run that misses the SLA only because of the wake from zero says so, with the first
// step's numbers without it.
func TestSummaryAfterWake(t *testing.T) {
	r := synthetic(false)
	r.Stats[0].P95 = 400 * time.Millisecond
	r.AfterWake = loadgen.Totals{Offered: 2000, OK: 2000, P50: 101 * time.Millisecond, P95: 104 * time.Millisecond}
	var buf bytes.Buffer
	if err := writeSummary(&buf, r); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	for _, want := range []string{"300, >5s", "in every step: MISS", "missed only in the first step's wake from zero: without its first 5 s, p95 is 104.0 ms"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	r.Stats[2].P95 = 200 * time.Millisecond // a later step misses too: no excuse
	buf.Reset()
	_ = writeSummary(&buf, r)
	if strings.Contains(buf.String(), "missed only") {
		t.Errorf("a later step missed, but the summary blames the wake:\n%s", buf.String())
	}
}
