package main

import (
	"strings"
	"testing"

	"github.com/rouse-run/rouse/control"
)

// describe's Autoscaling table: only the revisions that set scale_down_delay or
// activation_scale, and nothing at all when none does.
func TestPrintScaleKnobs(t *testing.T) {
	var b strings.Builder
	printScaleKnobs(&b, []control.RevisionInfo{{Name: "hello-00002"}, {Name: "hello-00001"}})
	if b.Len() != 0 {
		t.Fatalf("printed for revisions that set neither:\n%s", b.String())
	}
	printScaleKnobs(&b, []control.RevisionInfo{
		{Name: "hello-00003", ScaleDownDelay: "5m0s", ActivationScale: 3},
		{Name: "hello-00002"},
		{Name: "hello-00001", ActivationScale: 2},
	})
	want := `
Autoscaling:
  REVISION     SCALE_DOWN_DELAY  ACTIVATION_SCALE
  hello-00003  5m0s              3
  hello-00001  -                 2
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
