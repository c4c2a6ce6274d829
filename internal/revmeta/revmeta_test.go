package revmeta

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMetaRoundTrip(t *testing.T) {
	c := Defaults("default", "hello", "hello-00003")
	c.Generation = 3
	c.SpecHash = "abc"
	c.Concurrency = 10
	c.Timeout = 90 * time.Second
	c.Metric = MetricRPS
	c.Target = 55.5
	c.Min, c.Max, c.Initial = 0, 20, 2
	c.ScaleToZeroGrace = 5 * time.Second
	got, err := FromMeta(c.Meta())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
}

func TestFromMetaErrors(t *testing.T) {
	if _, err := FromMeta(map[string]string{"x": "y"}); err == nil {
		t.Fatal("non-revision meta accepted")
	}
	m := Defaults("default", "a", "a-00001").Meta()
	m[KeyWindow] = "sixty"
	if _, err := FromMeta(m); err == nil || !strings.Contains(err.Error(), KeyWindow) {
		t.Fatalf("want error naming %s, got %v", KeyWindow, err)
	}
}

func TestFromMetaRPSDefaultTarget(t *testing.T) {
	c, err := FromMeta(map[string]string{KeyService: "a", KeyRevision: "a-00001", KeyMetric: MetricRPS})
	if err != nil {
		t.Fatal(err)
	}
	if c.Target != DefaultRPSTarget {
		t.Fatalf("rps default target = %v", c.Target)
	}
}
