package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

func TestCleanReason(t *testing.T) {
	for in, want := range map[string]string{
		"  boom: config missing \r":   "boom: config missing",
		"a\x00b\x1b[0mc\td":           "a b [0mc d",
		"bad \xff utf8":               "bad ? utf8",
		strings.Repeat("x", 200):      strings.Repeat("x", 200),
		strings.Repeat("x", 201):      strings.Repeat("x", 197) + "…",
		strings.Repeat("ü", 150):      strings.Repeat("ü", 98) + "…", // cut at a rune boundary
		"line one\nline two (exit 3)": "line one line two (exit 3)",
	} {
		got := CleanReason(in)
		if got != want {
			t.Errorf("CleanReason(%q) = %q, want %q", in, got, want)
		}
		if len(got) > MaxFailureReason {
			t.Errorf("CleanReason(%q) is %d bytes", in, len(got))
		}
	}
}

// Failure records decode into the snapshot beside (never as) revision configs; a broken
// one is reported and left out, and a too-long reason is cut whoever wrote it.
func TestDecodeFailures(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	f := Failure{Namespace: "default", Revision: "hello-00003", Reason: strings.Repeat("r", 500), At: at, RetryAt: at.Add(10 * time.Second), RetryAfter: 10, Attempt: 1}
	b, _ := json.Marshal(f)
	snap, errs := Decode(consulapi.KVPairs{
		{Key: FailureKey("default", "hello-00003"), Value: b},
		{Key: FailureKey("default", "broken"), Value: []byte("{")},
		{Key: FailureKey("default", "empty"), Value: []byte("{}")},
	})
	if len(errs) != 2 || len(snap.Revisions) != 0 || len(snap.Failures) != 1 {
		t.Fatalf("errs %v, revisions %v, failures %v", errs, snap.Revisions, snap.Failures)
	}
	got := snap.Failures["default/hello-00003"]
	if len(got.Reason) > MaxFailureReason || !got.RetryAt.Equal(f.RetryAt) || got.Attempt != 1 {
		t.Fatalf("decoded %+v", got)
	}
}

func TestFailureRoundTrip(t *testing.T) {
	s := New(cluster.Consul)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	f := Failure{Namespace: "default", Revision: "rt-00001", Reason: "boom\n", At: now, RetryAt: now.Add(10 * time.Second), RetryAfter: 10, Attempt: 1}
	if err := s.PutFailure(ctx, f); err != nil {
		t.Fatal(err)
	}
	fs, err := s.ListFailures(ctx)
	if err != nil || len(fs) != 1 || fs[0].Reason != "boom" || !fs[0].At.Equal(now) {
		t.Fatalf("listed %+v %v", fs, err)
	}
	if err := s.DeleteFailure(ctx, "default", "rt-00001"); err != nil {
		t.Fatal(err)
	}
	if fs, err := s.ListFailures(ctx); err != nil || len(fs) != 0 {
		t.Fatalf("after delete %+v %v", fs, err)
	}
}
