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
	tbl := Build(snapshot(), "localhost", "internal")
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
	tbl := Build(snap, "example.com", "internal")
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
	tbl := Build(snapshot(), "localhost", "internal")
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
	tbl := Build(store.Snapshot{Services: []*store.Service{{Namespace: "ns", Name: "z", Route: []store.RouteTarget{{Revision: "z-1", Percent: 0, Tag: "t"}}}}}, "d", "")
	if r := tbl.Lookup([]byte("z.ns.d")); r == nil || r.Pick(7) != nil {
		t.Fatal("route with no share must exist and pick nothing")
	}
	if r := tbl.Lookup([]byte("t-z.ns.d")); r == nil || r.Pick(7).Revision != "z-1" {
		t.Fatal("tag host of a 0% target must still route")
	}
}

func TestString(t *testing.T) {
	s := Build(snapshot(), "localhost", "internal").String()
	for _, want := range []string{"HOST", "hello.default.localhost", "hello-00002", "90%", "latest", "canary-hello.default.localhost", "unlimited", "problem:"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	t.Log("\n" + s)
}

func BenchmarkLookupPick(b *testing.B) {
	tbl := Build(snapshot(), "localhost", "internal")
	host := []byte("hello.default.localhost:8080")
	var x uint32
	for i := 0; i < b.N; i++ {
		x += 0x9e3779b9
		if tbl.Lookup(host).Pick(x) == nil {
			b.Fatal("nil")
		}
	}
}

// BenchmarkBuild10k: the pure step for 10 000 services with one revision each, with the
// internal listener's hosts (internal domain) and without.
func BenchmarkBuild10k(b *testing.B) {
	b.Run("internal", func(b *testing.B) { benchBuild10k(b, "internal", 40000) })
	b.Run("public-only", func(b *testing.B) { benchBuild10k(b, "", 20000) })
}

func benchBuild10k(b *testing.B, internalDomain string, hosts int) {
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
		if t := Build(snap, "localhost", internalDomain); t.Len() != hosts {
			b.Fatal(t.Len())
		}
	}
}

func visSnapshot() store.Snapshot {
	return store.Snapshot{Services: []*store.Service{
		{Namespace: "default", Name: "web", Route: []store.RouteTarget{{Revision: "web-1", Percent: 100, Tag: "blue"}}},
		{Namespace: "default", Name: "account", Visibility: store.VisibilityInternal, Route: []store.RouteTarget{
			{Revision: "account-2", Percent: 100}, {Revision: "account-1", Percent: 0, Tag: "old"}}},
		{Namespace: "default", Name: "odd", Visibility: "privat", Route: []store.RouteTarget{{Revision: "odd-1", Percent: 100}}},
	}}
}

func TestVisibility(t *testing.T) {
	tbl := Build(visSnapshot(), "example.com", "Internal.")
	type row struct {
		public, internal string // the revision each listener routes to, "" for none
		isInternal       bool   // Route.Internal of what the internal listener finds
	}
	for host, want := range map[string]row{
		"web.default.example.com":         {"web-1", "web-1", false}, // public: on both listeners
		"blue-web.default.example.com":    {"web-1", "web-1", false},
		"web.default.internal":            {"", "web-1", true}, // and under the internal domain inside
		"blue-web.default.internal:8080":  {"", "web-1", true},
		"account.default.internal":        {"", "account-2", true}, // internal: only inside
		"ACCOUNT.default.internal.":       {"", "account-2", true},
		"old-account.default.internal":    {"", "account-1", true},
		"account.default.example.com":     {"", "", false}, // never under the public domain
		"old-account.default.example.com": {"", "", false},
		"odd.default.internal":            {"", "odd-1", true}, // unknown visibility: internal, reported
		"odd.default.example.com":         {"", "", false},
	} {
		first := func(r *Route) string {
			if r == nil || len(r.Targets) == 0 {
				return ""
			}
			return r.Targets[0].Revision
		}
		pub, in := tbl.Lookup([]byte(host)), tbl.LookupInternal([]byte(host))
		if first(pub) != want.public || first(in) != want.internal {
			t.Errorf("%s: public %q internal %q, want %q and %q", host, first(pub), first(in), want.public, want.internal)
		}
		if in != nil && in.Internal != want.isInternal {
			t.Errorf("%s: Internal = %v", host, in.Internal)
		}
		if pub != nil && pub.Internal {
			t.Errorf("%s: the public listener found an internal route", host)
		}
	}
	if tbl.InternalDomain() != "internal" {
		t.Fatalf("internal domain %q", tbl.InternalDomain())
	}
	if !strings.Contains(strings.Join(tbl.Problems(), "\n"), `unknown visibility "privat"`) {
		t.Fatalf("problems %q", tbl.Problems())
	}
	if s := tbl.String(); !strings.Contains(s, "account.default.internal (internal)") {
		t.Fatalf("String lacks the internal marker:\n%s", s)
	}
	// Without an internal domain (or one equal to the public domain) internal services are
	// served nowhere, and public ones only under the public domain.
	for _, id := range []string{"", "example.com"} {
		tbl := Build(visSnapshot(), "example.com", id)
		if tbl.LookupInternal([]byte("account.default.internal")) != nil || tbl.LookupInternal([]byte("account.default.example.com")) != nil ||
			tbl.Lookup([]byte("account.default.example.com")) != nil {
			t.Fatalf("internal domain %q: the internal service is served", id)
		}
		if tbl.LookupInternal([]byte("web.default.example.com")) == nil {
			t.Fatalf("internal domain %q: the public service is not served inside", id)
		}
	}
}

func TestHeaderTags(t *testing.T) {
	snap := snapshot()
	snap.Services[0].TagHeader = true
	snap.Services = append(snap.Services, &store.Service{Namespace: "default", Name: "in", Visibility: store.VisibilityInternal, TagHeader: true,
		Route: []store.RouteTarget{{Revision: "in-2", Percent: 100}, {Revision: "in-1", Percent: 0, Tag: "prev"}}})
	tbl := Build(snap, "localhost", "internal")
	r := tbl.Lookup([]byte("hello.default.localhost"))
	if !r.HeaderTags() {
		t.Fatal("tag header routing is off")
	}
	for tag, want := range map[string]string{
		"canary":                "hello-00003", // a 0 % target is reachable by its tag
		"CANARY":                "hello-00003",
		"latest":                "hello-00002",
		"nope":                  "", // unknown: the main route itself (its split)
		"":                      "",
		strings.Repeat("x", 64): "",
	} {
		got := r.ForTag([]byte(tag))
		switch {
		case want == "" && got != r:
			t.Errorf("ForTag(%q) = %s, want the main route", tag, got.Host)
		case want != "" && (got.Tag == "" || got.Targets[0].Revision != want):
			t.Errorf("ForTag(%q) = %+v, want %s", tag, got, want)
		}
	}
	// The tag's route is the one of the same listener's domain, with its own config index.
	if tr := r.ForTag([]byte("canary")); tr.Host != "canary-hello.default.localhost" || tbl.Revisions()[tr.Targets[0].Index].Config.Revision != "hello-00003" {
		t.Fatalf("canary route %+v", tr)
	}
	if tr := tbl.LookupInternal([]byte("hello.default.internal")).ForTag([]byte("canary")); tr.Host != "canary-hello.default.internal" {
		t.Fatalf("internal canary route %s", tr.Host)
	}
	if tr := tbl.LookupInternal([]byte("in.default.internal")).ForTag([]byte("prev")); tr.Targets[0].Revision != "in-1" {
		t.Fatalf("internal service's tag: %+v", tr)
	}
	// Off for a service that did not turn it on, and for a tag host itself.
	if tbl.Lookup([]byte("api.prod.localhost")).HeaderTags() || tbl.Lookup([]byte("canary-hello.default.localhost")).HeaderTags() {
		t.Fatal("tag header routing on where it was not asked for")
	}
	if got := tbl.Lookup([]byte("api.prod.localhost")); got.ForTag([]byte("canary")) != got {
		t.Fatal("ForTag without tag header routing must be the route itself")
	}
}

func TestLookupAllocs(t *testing.T) {
	tbl := Build(snapshot(), "localhost", "internal")
	snap := snapshot()
	snap.Services[0].TagHeader = true
	tagged := Build(snap, "localhost", "internal")
	host, upper := []byte("hello.default.localhost:8080"), []byte("Hello.Default.Internal")
	if n := testing.AllocsPerRun(100, func() {
		_ = tbl.Lookup(host)
		_ = tbl.LookupInternal(upper)
		_ = tagged.Lookup(host).ForTag([]byte("Canary"))
	}); n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
}
