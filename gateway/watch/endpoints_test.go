package watch

import (
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

func check(node, sid, name, status string, tags ...string) *consulapi.HealthCheck {
	return &consulapi.HealthCheck{Node: node, CheckID: "service:" + sid, ServiceID: sid, ServiceName: name, Status: status, ServiceTags: tags}
}

func TestGroupChecks(t *testing.T) {
	rouse := []string{"rouse", "rouse.service=hello"}
	checks := consulapi.HealthChecks{
		{Node: "n1", CheckID: "serfHealth", Status: consulapi.HealthPassing},
		{Node: "n2", CheckID: "serfHealth", Status: consulapi.HealthCritical},
		check("n1", "a", "hello-00001", consulapi.HealthPassing, rouse...),
		check("n1", "b", "hello-00001", consulapi.HealthPassing, rouse...),
		check("n1", "b", "hello-00001", consulapi.HealthWarning, rouse...), // second check of b
		check("n2", "c", "hello-00001", consulapi.HealthPassing, rouse...), // node n2 is down
		check("n1", "d", "hello-00002", "maintenance", append(rouse, revmeta.TagNamespacePrefix+"prod")...),
		check("n1", "x", "other", consulapi.HealthPassing, "web"), // not rouse
	}
	checks[2].Output = "HTTP GET http://10.0.0.1:2345/healthz?full=1: 200 OK Output: ok"
	got := groupChecks(checks)
	want := map[instKey]string{
		{"n1", "a"}: consulapi.HealthPassing,
		{"n1", "b"}: consulapi.HealthWarning,
		{"n2", "c"}: consulapi.HealthCritical,
		{"n1", "d"}: consulapi.HealthCritical,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d instances, want %d", len(got), len(want))
	}
	for k, st := range want {
		if got[k] == nil || got[k].status != st {
			t.Errorf("%v: got %+v, want status %s", k, got[k], st)
		}
	}
	if p := got[instKey{"n1", "a"}].probe; p != "/healthz?full=1" {
		t.Errorf("probe path from check output = %q", p)
	}
	if ns := got[instKey{"n1", "d"}].ns; ns != "prod" {
		t.Errorf("namespace tag = %q", ns)
	}
}

func TestBuildReusesUnchanged(t *testing.T) {
	insts := map[instKey]*instance{
		{"n1", "a"}: {name: "s1", status: consulapi.HealthPassing, probe: "/from-check"},
		{"n1", "b"}: {name: "s2", status: consulapi.HealthCritical},
		{"n1", "c"}: {name: "s2", status: consulapi.HealthPassing},
		{"n1", "z"}: {name: "s3", status: consulapi.HealthPassing}, // address not known: left out
	}
	addrs := map[instKey]catalogInfo{
		{"n1", "a"}: {addr: "10.0.0.1:1", probe: "/healthz"},
		{"n1", "b"}: {addr: "10.0.0.1:2"},
		{"n1", "c"}: {addr: "10.0.0.1:3"},
	}
	first := build(insts, addrs, nil)
	if len(first) != 2 || len(first["s2"].Endpoints) != 2 || first["s2"].Endpoints[0].ID != "n1/b" {
		t.Fatalf("first build: %+v", first)
	}
	if first["s1"].Endpoints[0].ProbePath != "/healthz" {
		t.Fatal("service meta must win over the check's URL")
	}
	prev := &EndpointsState{Services: first}
	insts[instKey{"n1", "b"}] = &instance{name: "s2", status: consulapi.HealthPassing}
	second := build(insts, addrs, prev)
	if second["s1"] != first["s1"] {
		t.Fatal("unchanged service must keep its pointer")
	}
	if second["s2"] == first["s2"] || second["s2"].Endpoints[0].Status != consulapi.HealthPassing {
		t.Fatal("changed service must get a new value")
	}
	if sameServices(first, second) || !sameServices(second, build(insts, addrs, &EndpointsState{Services: second})) {
		t.Fatal("sameServices")
	}
}

func TestCheckPath(t *testing.T) {
	for out, want := range map[string]string{
		"HTTP GET http://127.0.0.1:80/healthz: 200 OK Output: ok":            "/healthz",
		"HTTP GET http://[::1]:80/ready?x=1: Get \"...\": dial tcp: refused": "/ready?x=1",
		"":                                  "",
		"TCP connect 127.0.0.1:80: Success": "",
		"HTTP GET http://127.0.0.1:80: 503 Service Unavailable Output: starting": "/",
	} {
		if got := checkPath(&consulapi.HealthCheck{Output: out}); got != want {
			t.Errorf("checkPath(%q) = %q, want %q", out, got, want)
		}
	}
}
