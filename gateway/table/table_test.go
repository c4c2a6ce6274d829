package table

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

func snapshot() store.Snapshot {
	cfg := func(rev string, conc int) revmeta.Config {
		c := revmeta.Defaults("default", "hello", rev)
		c.Concurrency = conc
		c.Timeout = 5 * time.Second
		return c
	}
	return store.Snapshot{
		Services: []*store.Service{
			{Namespace: "default", Name: "hello", Route: []store.RouteTarget{
				{Revision: "hello-00002", Percent: 90, Tag: "latest"},
				{Revision: "hello-00001", Percent: 10},
				{Revision: "hello-00003", Percent: 0, Tag: "canary"},
			}},
			{Namespace: "prod", Name: "api", Route: []store.RouteTarget{{Revision: "api-00007", Percent: 100}}},
		},
		Revisions: map[string]revmeta.Config{
			"default/hello-00001": cfg("hello-00001", 0),
			"default/hello-00002": cfg("hello-00002", 1),
			"default/hello-00003": cfg("hello-00003", 0),
		},
	}
}

func TestBuildAndLookup(t *testing.T) {
	tbl := Build(snapshot(), "localhost")
	for host, want := range map[string]string{
		"hello.default.localhost":        "hello-00002,hello-00001",
		"HELLO.Default.localhost:8080":   "hello-00002,hello-00001",
		"hello.default.localhost.":       "hello-00002,hello-00001",
		"latest-hello.default.localhost": "hello-00002",
		"canary-hello.default.localhost": "hello-00003",
		"api.prod.localhost":             "api-00007",
		"nope.default.localhost":         "",
		"hello.default.example.com":      "",
		"[::1]:80":                       "",
	} {
		r := tbl.Lookup([]byte(host))
		var got []string
		if r != nil {
			for _, tg := range r.Targets {
				got = append(got, tg.Revision)
			}
		}
		if g := strings.Join(got, ","); g != want {
			t.Errorf("Lookup(%q) = %q, want %q", host, g, want)
		}
	}
	// Revisions are indexed in key order and targets point at their own config.
	r := tbl.Lookup([]byte("hello.default.localhost"))
	if c := tbl.Revisions()[r.Targets[0].Index].Config; c.Revision != "hello-00002" || c.Concurrency != 1 {
		t.Fatalf("target 0 config = %+v", c)
	}
	if n := len(tbl.Revisions()); n != 4 {
		t.Fatalf("revisions = %d, want 4", n)
	}
	// api-00007 has no config in KV: routed with defaults and reported.
	if len(tbl.Problems()) != 1 || !strings.Contains(tbl.Problems()[0], "api-00007") {
		t.Fatalf("problems = %q", tbl.Problems())
	}
	if c := tbl.Revisions()[0]; c.Key != "default/hello-00001" {
		t.Fatalf("first revision %q", c.Key)
	}
}

func TestServiceHostWinsOverTagHost(t *testing.T) {
	snap := store.Snapshot{Services: []*store.Service{
		{Namespace: "ns", Name: "b", Route: []store.RouteTarget{{Revision: "b-1", Percent: 100, Tag: "a"}}},
		{Namespace: "ns", Name: "a-b", Route: []store.RouteTarget{{Revision: "a-b-1", Percent: 100}}},
	}}
	tbl := Build(snap, "example.com")
	if r := tbl.Lookup([]byte("a-b.ns.example.com")); r == nil || r.Service != "a-b" || r.Tag != "" {
		t.Fatalf("a-b.ns.example.com → %+v", r)
	}
	found := false
	for _, p := range tbl.Problems() {
		found = found || strings.Contains(p, "collides")
	}
	if !found {
		t.Fatalf("collision not reported: %q", tbl.Problems())
	}
}

func TestPickSpread(t *testing.T) {
	tbl := Build(snapshot(), "localhost")
	r := tbl.Lookup([]byte("hello.default.localhost"))
	rng := rand.New(rand.NewPCG(1, 2))
	counts := map[string]int{}
	const n = 200000
	for i := 0; i < n; i++ {
		counts[r.Pick(rng.Uint32()).Revision]++
	}
	if got := float64(counts["hello-00001"]) / n; got < 0.095 || got > 0.105 {
		t.Fatalf("10%% target got %.4f", got)
	}
	if counts["hello-00003"] != 0 {
		t.Fatal("0% target picked")
	}
	// The extremes of the random range land on the first and last targets.
	if r.Pick(0).Revision != "hello-00002" || r.Pick(^uint32(0)).Revision != "hello-00001" {
		t.Fatal("edges")
	}
}

func TestPickNoShare(t *testing.T) {
	tbl := Build(store.Snapshot{Services: []*store.Service{{Namespace: "ns", Name: "z", Route: []store.RouteTarget{{Revision: "z-1", Percent: 0, Tag: "t"}}}}}, "d")
	if r := tbl.Lookup([]byte("z.ns.d")); r == nil || r.Pick(7) != nil {
		t.Fatal("route with no share must exist and pick nothing")
	}
	if r := tbl.Lookup([]byte("t-z.ns.d")); r == nil || r.Pick(7).Revision != "z-1" {
		t.Fatal("tag host of a 0% target must still route")
	}
}

func TestString(t *testing.T) {
	s := Build(snapshot(), "localhost").String()
	for _, want := range []string{"HOST", "hello.default.localhost", "hello-00002", "90%", "latest", "canary-hello.default.localhost", "unlimited", "problem:"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	t.Log("\n" + s)
}

func BenchmarkLookupPick(b *testing.B) {
	tbl := Build(snapshot(), "localhost")
	host := []byte("hello.default.localhost:8080")
	var x uint32
	for i := 0; i < b.N; i++ {
		x += 0x9e3779b9
		if tbl.Lookup(host).Pick(x) == nil {
			b.Fatal("nil")
		}
	}
}

// BenchmarkBuild10k: the pure step for 10 000 services with one revision each.
func BenchmarkBuild10k(b *testing.B) {
	snap := store.Snapshot{Revisions: map[string]revmeta.Config{}}
	for i := 0; i < 10000; i++ {
		name := "svc" + strconv.Itoa(i)
		rev := name + "-00001"
		snap.Services = append(snap.Services, &store.Service{Namespace: "default", Name: name,
			Route: []store.RouteTarget{{Revision: rev, Percent: 100, Tag: "latest"}}})
		snap.Revisions["default/"+rev] = revmeta.Defaults("default", name, rev)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if t := Build(snap, "localhost"); t.Len() != 20000 {
			b.Fatal(t.Len())
		}
	}
}
