package jobspec

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// scale_down_delay and activation_scale (Knative's scale-down-delay and activation-scale):
// decoded within revmeta's bounds, agreeing with Validate on each side of each bound.
func TestScaleKnobsBoundsAgreeWithValidate(t *testing.T) {
	type a = revmeta.Autoscaling
	for _, tc := range []struct {
		hcl string
		set func(*a)
	}{
		{`scale_down_delay = "0s"`, func(x *a) {}},
		{`scale_down_delay = "5m"`, func(x *a) { x.ScaleDownDelay = 5 * time.Minute }},
		{`scale_down_delay = "1h"`, func(x *a) { x.ScaleDownDelay = time.Hour }},
		{`scale_down_delay = "61m"`, func(x *a) { x.ScaleDownDelay = 61 * time.Minute }},
		{`scale_down_delay = "-1s"`, func(x *a) { x.ScaleDownDelay = -time.Second }},
		{"activation_scale = 0", func(x *a) {}},
		{"activation_scale = 1", func(x *a) {}}, // one is what a wake starts anyway
		{"activation_scale = 3", func(x *a) { x.ActivationScale = 3 }},
		{"activation_scale = 100000", func(x *a) { x.ActivationScale = 100000 }},
		{"activation_scale = 100001", func(x *a) { x.ActivationScale = 100001 }},
		{"activation_scale = -1", func(x *a) { x.ActivationScale = -1 }},
		{"activation_scale = 3\n    max = 3", func(x *a) { x.ActivationScale, x.Max = 3, 3 }},
		{"activation_scale = 4\n    max = 3", func(x *a) { x.ActivationScale, x.Max = 4, 3 }},
		{"activation_scale = 4\n    max = 0", func(x *a) { x.ActivationScale = 4 }},
	} {
		src := "service \"b\" {\n  image = \"x\"\n  autoscaling {\n    " + tc.hcl + "\n  }\n}\n"
		s, diags := parseOne(src, nil, nil)
		want := revmeta.DefaultAutoscaling()
		tc.set(&want)
		verr := want.Validate()
		switch {
		case diags.HasErrors() != (verr != nil):
			t.Errorf("%s: the decoder says %v, Validate says %v", tc.hcl, diags.Errs(), verr)
		case verr == nil && s.Autoscaling != want:
			t.Errorf("%s: decoded\n %+v\nwant\n %+v", tc.hcl, s.Autoscaling, want)
		}
	}
}

func TestScaleKnobsBadInput(t *testing.T) {
	src := `service "a" {
  image = "x"
  autoscaling {
    max              = 2
    activation_scale = 3
    scale_down_delay = "2h"
  }
}
`
	_, diags := parseOne(src, nil, nil)
	got := diagWants(diags, hcl.DiagError)
	wantd := []want{
		{"Invalid autoscaling.scale_down_delay", "6:24"},
		{"Invalid autoscaling bounds", "5:24"},
	}
	if !slices.Equal(got, wantd) {
		t.Errorf("diagnostics\n %v\nwant\n %v", got, wantd)
	}
	for _, d := range diags {
		if d.Summary == "Invalid autoscaling bounds" && !strings.Contains(d.Detail, "activation_scale (3) is greater than max (2)") {
			t.Errorf("detail %q", d.Detail)
		}
	}

	_, diags = parseOne("service \"a\" {\n  image = \"x\"\n  autoscaling {\n    scale_down_delay = \"soon\"\n    activation_scale = 1.5\n  }\n}\n", nil, nil)
	got = diagWants(diags, hcl.DiagError)
	wantd = []want{{"Invalid autoscaling.scale_down_delay", "4:24"}, {"Invalid autoscaling.activation_scale", "5:24"}}
	if !slices.Equal(got, wantd) {
		t.Errorf("diagnostics\n %v\nwant\n %v", got, wantd)
	}
}

// Both knobs change the template hash when set; unset (or activation_scale = 1, the
// default) they leave it as it was, so revisions written before them do not roll.
func TestScaleKnobsTemplateHash(t *testing.T) {
	with := func(body string) string {
		return strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  autoscaling {\n"+body+"  }", 1)
	}
	base := mustParse(t, hashBase, nil, nil).TemplateHash()
	for _, src := range []string{with(""), with("    scale_down_delay = \"0s\"\n"), with("    activation_scale = 1\n"), with("    activation_scale = 0\n")} {
		if h := mustParse(t, src, nil, nil).TemplateHash(); h != base {
			t.Errorf("%s: hash %s, want the unset one %s", src, h, base)
		}
	}
	delay := mustParse(t, with("    scale_down_delay = \"5m\"\n"), nil, nil).TemplateHash()
	act := mustParse(t, with("    activation_scale = 3\n"), nil, nil).TemplateHash()
	if delay == base || act == base || delay == act {
		t.Errorf("hashes: base %s, scale_down_delay %s, activation_scale %s", base, delay, act)
	}
}

// The knobs reach the scaler: compiled into job meta, read back as they were decoded.
func TestScaleKnobsReachJobMeta(t *testing.T) {
	for _, body := range []string{"", "    scale_down_delay = \"90s\"\n    activation_scale = 3\n", "    activation_scale = 1\n"} {
		s := mustParse(t, "service \"k\" {\n  image = \"x\"\n  autoscaling {\n"+body+"  }\n}\n", nil, nil)
		job, _, err := Compile(s, 1)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := revmeta.FromMeta(job.Meta)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Autoscaling != s.Autoscaling {
			t.Errorf("%q: job meta gives\n %+v\nthe spec decoded\n %+v", body, cfg.Autoscaling, s.Autoscaling)
		}
		_, hasDelay := job.Meta[revmeta.KeyScaleDownDelay]
		_, hasAct := job.Meta[revmeta.KeyActivationScale]
		if hasDelay != (s.Autoscaling.ScaleDownDelay > 0) || hasAct != (s.Autoscaling.ActivationScale > 0) {
			t.Errorf("%q: meta keys written for unset knobs: %v", body, job.Meta)
		}
	}
}
