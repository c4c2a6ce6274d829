package revmeta

import (
	"encoding/json"
	"math"
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

// TestMetaImage: a revision's image and the digest it runs survive the round trip through
// job meta; a command's revision has neither key.
func TestMetaImage(t *testing.T) {
	c := Defaults("default", "hi", "hi-00001")
	c.Image, c.ImageDigest = "127.0.0.1:5000/hi:1", "sha256:"+strings.Repeat("ab", 32)
	m := c.Meta()
	if m[KeyImage] != c.Image || m[KeyImageDigest] != c.ImageDigest {
		t.Fatalf("meta %v", m)
	}
	got, err := FromMeta(m)
	if err != nil || got.Image != c.Image || got.ImageDigest != c.ImageDigest {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	m = Defaults("default", "hi", "hi-00001").Meta()
	if _, ok := m[KeyImage]; ok {
		t.Fatalf("a command's revision has %s: %v", KeyImage, m)
	}
	if _, ok := m[KeyImageDigest]; ok {
		t.Fatalf("a command's revision has %s: %v", KeyImageDigest, m)
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

// TestConfigJSON: the Consul KV copy keeps its flat shape (the autoscaling fields inline),
// so records written before Autoscaling was its own type decode to the same Config.
func TestConfigJSON(t *testing.T) {
	const old = `{"service":"hello","namespace":"default","revision":"hello-00002","generation":2,"spec_hash":"h",` +
		`"concurrency":10,"timeout":90000000000,"metric":"rps","target":55.5,"target_utilization":0.7,"min":1,` +
		`"max":20,"initial":2,"window":60000000000,"panic_window_percentage":10,"panic_threshold_percentage":200,` +
		`"max_scale_up_rate":1000,"max_scale_down_rate":2,"scale_to_zero_grace":5000000000,"target_burst_capacity":-1}`
	c := Defaults("default", "hello", "hello-00002")
	c.Generation, c.SpecHash, c.Concurrency, c.Timeout = 2, "h", 10, 90*time.Second
	c.Metric, c.Target, c.Min, c.Max, c.Initial = MetricRPS, 55.5, 1, 20, 2
	c.ScaleToZeroGrace, c.TargetBurstCapacity = 5*time.Second, -1
	b, err := json.Marshal(c)
	if err != nil || string(b) != old {
		t.Fatalf("marshal: %v\n got %s\nwant %s", err, b, old)
	}
	var back Config
	if err := json.Unmarshal([]byte(old), &back); err != nil || back != c {
		t.Fatalf("unmarshal: %v\n got %+v\nwant %+v", err, back, c)
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultAutoscaling().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for field, mod := range map[string]func(*Autoscaling){
		"metric":                     func(a *Autoscaling) { a.Metric = "" },
		"target":                     func(a *Autoscaling) { a.Target = math.Inf(1) },
		"target_utilization":         func(a *Autoscaling) { a.TargetUtilization = math.NaN() },
		"min":                        func(a *Autoscaling) { a.Min, a.Max = 3, 2 },
		"initial":                    func(a *Autoscaling) { a.Initial = -1 },
		"max":                        func(a *Autoscaling) { a.Max = MaxCount + 1 },
		"window":                     func(a *Autoscaling) { a.Window = 0 },
		"panic_window_percentage":    func(a *Autoscaling) { a.PanicWindowPct = 0 },
		"panic_threshold_percentage": func(a *Autoscaling) { a.PanicThresholdPct = 100 },
		"max_scale_up_rate":          func(a *Autoscaling) { a.MaxScaleUpRate = 1 },
		"max_scale_down_rate":        func(a *Autoscaling) { a.MaxScaleDownRate = 0 },
		"scale_to_zero_grace":        func(a *Autoscaling) { a.ScaleToZeroGrace = -time.Second },
		"target_burst_capacity":      func(a *Autoscaling) { a.TargetBurstCapacity = -2 },
	} {
		a := DefaultAutoscaling()
		mod(&a)
		if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "autoscaling "+field+" ") {
			t.Errorf("%s: want an error naming it, got %v", field, err)
		}
	}
}

// TestFromMetaValidates: zeros that mean "not set" keep the defaults (see FromMeta), and
// values the scaler cannot act on are errors that name the key's setting.
func TestFromMetaValidates(t *testing.T) {
	m := Defaults("default", "a", "a-00001").Meta()
	m[KeyTargetUtilization], m[KeyMaxScaleDownRate], m[KeyWindow] = "0", "0", "0s"
	c, err := FromMeta(m)
	if err != nil || c != Defaults("default", "a", "a-00001") {
		t.Fatalf("zeros: %v\n got %+v", err, c)
	}
	for key, v := range map[string]string{KeyTargetUtilization: "1.5", KeyWindow: "1s", KeyMetric: "cpu", KeyMin: "-1"} {
		m := Defaults("default", "a", "a-00001").Meta()
		m[key] = v
		field := strings.TrimPrefix(key, "rouse.autoscaling.")
		if _, err := FromMeta(m); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s=%s: want an error naming %s, got %v", key, v, field, err)
		}
	}
}

// TestMetaProtocol: h2c survives the round trip through job meta; HTTP/1.1, the default,
// writes no key (so the meta of revisions from before the key is unchanged) and reads back
// as "", as does an explicit "http1".
func TestMetaProtocol(t *testing.T) {
	c := Defaults("default", "g", "g-00001")
	c.Protocol = ProtocolH2C
	m := c.Meta()
	if m[KeyProtocol] != ProtocolH2C {
		t.Fatalf("meta %s = %q, want %q", KeyProtocol, m[KeyProtocol], ProtocolH2C)
	}
	got, err := FromMeta(m)
	if err != nil || !reflect.DeepEqual(got, c) || !got.H2C() {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, got, c)
	}

	for _, p := range []string{"", ProtocolHTTP1} {
		c := Defaults("default", "g", "g-00001")
		c.Protocol = p
		m := c.Meta()
		if _, ok := m[KeyProtocol]; ok {
			t.Errorf("protocol %q: meta has %s: %v", p, KeyProtocol, m)
		}
		if c.H2C() {
			t.Errorf("protocol %q reads as h2c", p)
		}
		got, err := FromMeta(m)
		if err != nil || got.Protocol != "" || got.H2C() {
			t.Errorf("protocol %q: read back %q, %v", p, got.Protocol, err)
		}
	}
	m = Defaults("default", "g", "g-00001").Meta()
	m[KeyProtocol] = ProtocolHTTP1
	if got, err := FromMeta(m); err != nil || got != Defaults("default", "g", "g-00001") {
		t.Errorf("explicit %s=%s: %v\n got %+v", KeyProtocol, ProtocolHTTP1, err, got)
	}
}

func TestFromMetaUnknownProtocol(t *testing.T) {
	m := Defaults("default", "g", "g-00001").Meta()
	m[KeyProtocol] = "h3"
	_, err := FromMeta(m)
	if err == nil || !strings.Contains(err.Error(), KeyProtocol) || !strings.Contains(err.Error(), `"h3"`) {
		t.Fatalf("want an error naming %s and its value, got %v", KeyProtocol, err)
	}
}

// TestConfigJSONProtocol: the KV copy has "protocol" only for h2c.
func TestConfigJSONProtocol(t *testing.T) {
	c := Defaults("default", "g", "g-00001")
	b, err := json.Marshal(c)
	if err != nil || strings.Contains(string(b), `"protocol"`) {
		t.Fatalf("HTTP/1.1 config: %v %s", err, b)
	}
	c.Protocol = ProtocolH2C
	if b, err = json.Marshal(c); err != nil || !strings.Contains(string(b), `"protocol":"h2c"`) {
		t.Fatalf("h2c config: %v %s", err, b)
	}
	var back Config
	if err := json.Unmarshal(b, &back); err != nil || back != c {
		t.Fatalf("unmarshal: %v\n got %+v\nwant %+v", err, back, c)
	}
}
