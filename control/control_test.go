package control

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/store"
)

// The control plane's pure parts: traffic updates, the GC plan, conditions, failure
// reasons and error classification. Everything that talks to Nomad and Consul is tested
// through the CLI on real agents (cmd/rouse).

func rev(name string, pct int, tag string) store.TrafficTarget {
	return store.TrafficTarget{Revision: name, Percent: pct, Tag: tag}
}

func latest(pct int, tag string) store.TrafficTarget {
	return store.TrafficTarget{Latest: true, Percent: pct, Tag: tag}
}

func TestUpdateTraffic(t *testing.T) {
	cur := []store.TrafficTarget{rev("a-1", 90, "stable"), latest(10, "")}
	for _, tc := range []struct {
		name string
		u    TrafficUpdate
		want string
		err  string
	}{
		{"split keeps tags", TrafficUpdate{Split: []store.TrafficTarget{latest(100, "")}},
			"[{ true 100 } {a-1 false 0 stable}]", ""},
		{"tag joins with 0%", TrafficUpdate{Tags: []store.TrafficTarget{rev("a-2", 0, "canary")}},
			"[{a-1 false 90 stable} { true 10 } {a-2 false 0 canary}]", ""},
		{"tag moves", TrafficUpdate{Tags: []store.TrafficTarget{latest(0, "stable")}},
			"[{a-1 false 90 } { true 10 stable}]", ""},
		{"untag drops empty entries", TrafficUpdate{Split: []store.TrafficTarget{latest(100, "")}, Untag: []string{"stable"}},
			"[{ true 100 }]", ""},
		{"untag unknown", TrafficUpdate{Untag: []string{"nope"}}, "", `no traffic target has tag "nope"`},
		{"duplicate target", TrafficUpdate{Split: []store.TrafficTarget{rev("a-1", 50, ""), rev("a-1", 50, "")}}, "", "a-1 appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := updateTraffic(cur, tc.u)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != tc.want {
				t.Fatalf("got %v %v, want %s", got, err, tc.want)
			}
		})
	}
	if cur[0].Tag != "stable" || len(cur) != 2 {
		t.Fatal("updateTraffic changed its input")
	}
}

func TestCheckTraffic(t *testing.T) {
	c := New(Config{Domain: "example.com"})
	live := []string{"a-1", "a-2"}
	for _, tc := range []struct {
		traffic []store.TrafficTarget
		err     string
	}{
		{[]store.TrafficTarget{rev("a-1", 90, "stable"), latest(10, "")}, ""},
		{[]store.TrafficTarget{rev("a-1", 90, "")}, "sum to 90"},
		{[]store.TrafficTarget{rev("a-9", 100, "")}, `no revision "a-9"`},
		{[]store.TrafficTarget{rev("a-1", 100, "x"), rev("a-2", 0, "x")}, `tag "x" is used twice`},
		{[]store.TrafficTarget{rev("a-1", 100, "Bad_Tag")}, `tag "Bad_Tag"`},
		{[]store.TrafficTarget{rev("a-1", 120, ""), rev("a-2", -20, "")}, "between 0 and 100"},
	} {
		_, err := c.checkTraffic("a", tc.traffic, "a-2", live)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: err %v, want %q", tc.traffic, err, tc.err)
		}
	}
	if c.URL("default", "a") != "http://a.default.example.com" || c.TagURL("default", "a", "stable") != "http://stable-a.default.example.com" {
		t.Fatal(c.URL("default", "a"))
	}
}

func TestGCPlan(t *testing.T) {
	jobs := map[string]*revJob{}
	for i := 1; i <= 7; i++ {
		n := fmt.Sprintf("s-%05d", i)
		jobs[n] = &revJob{Name: n, Generation: i}
	}
	jobs["s-00006"].Stopped = true // failed, newer than latest ready: purgeable
	rec := &store.Service{Latest: "s-00007", LatestReady: "s-00005",
		Route:   []store.RouteTarget{{Revision: "s-00005", Percent: 90}, {Revision: "s-00002", Percent: 10}},
		Traffic: []store.TrafficTarget{latest(90, ""), rev("s-00002", 10, "")}}
	// s-00007 is starting (newer than the latest ready, not stopped): never purged.
	if got := fmt.Sprint(gcPlan(rec, jobs, 5, 1)); got != "[s-00004 s-00003 s-00001]" {
		t.Fatalf("keep 1: %s", got)
	}
	if got := fmt.Sprint(gcPlan(rec, jobs, 5, 10)); got != "[]" {
		t.Fatalf("keep 10: %s", got)
	}
	if got := fmt.Sprint(gcPlan(rec, jobs, 5, 0)); got != "[s-00006 s-00004 s-00003 s-00001]" {
		t.Fatalf("keep 0: %s", got)
	}
}

func TestConditions(t *testing.T) {
	rec := &store.Service{Latest: "s-2", LatestReady: "s-1", Route: []store.RouteTarget{{Revision: "s-1", Percent: 100}}}
	revs := []RevisionInfo{{Name: "s-2", Status: RevisionFailed, Reason: "Terminated: Exit Code: 1"}, {Name: "s-1", Status: RevisionReady}}
	cs := conditions(rec, revs)
	if cs[0].Status != False || !strings.Contains(cs[0].Message, "Exit Code: 1") || cs[1].Status != True || cs[2].Status != False {
		t.Fatalf("%+v", cs)
	}
	revs[0].Status = RevisionCreating
	if cs := conditions(rec, revs); cs[2].Status != Unknown {
		t.Fatalf("%+v", cs)
	}
	rec.Latest = "s-1"
	if cs := conditions(rec, revs); cs[2].Status != True {
		t.Fatalf("%+v", cs)
	}
}

func TestFailureOf(t *testing.T) {
	allocs := []*nomadapi.AllocationListStub{{ID: "0123456789", ClientStatus: "running", TaskStates: map[string]*nomadapi.TaskState{
		"app": {Events: []*nomadapi.TaskEvent{
			{Type: nomadapi.TaskReceived, DisplayMessage: "Task received by client"},
			{Type: nomadapi.TaskDriverFailure, DriverError: "failed to pull image"},
		}},
	}}}
	f := failureOf(allocs)
	if f == nil || f.Reason != "Driver Failure: failed to pull image" || len(f.Events) != 2 || f.allocID != "0123456789" {
		t.Fatalf("%+v", f)
	}
	allocs[0].TaskStates["app"].Events = []*nomadapi.TaskEvent{{Type: nomadapi.TaskTerminated, ExitCode: 1}}
	if f := failureOf(allocs); f == nil || f.Reason != "Terminated: Exit Code: 1" {
		t.Fatalf("%+v", f)
	}
	allocs[0].TaskStates["app"].Events = []*nomadapi.TaskEvent{{Type: nomadapi.TaskStarted}}
	if f := failureOf(allocs); f != nil {
		t.Fatalf("a started task is not a failure: %+v", f)
	}
}

func TestStderrReason(t *testing.T) {
	for tail, want := range map[string]string{
		"boom: config missing\n":                                    "boom: config missing",
		"listening\nopen /etc/app.yaml: no such file\n\n":           "open /etc/app.yaml: no such file",
		"panic: runtime error: nil map\n\ngoroutine 1 [running]:\n": "panic: runtime error: nil map",
		"":                                   "",
		strings.Repeat("x", 300):             strings.Repeat("x", 200) + "…",
		"fatal error: all goroutines asleep": "fatal error: all goroutines asleep",
	} {
		if got := stderrReason(tail); got != want {
			t.Errorf("stderrReason(%q) = %q, want %q", tail, got, want)
		}
	}
}

func TestErrorClassification(t *testing.T) {
	c := New(Config{NomadAddr: "http://127.0.0.1:4646", ConsulAddr: "http://127.0.0.1:8500", ConsulToken: true})
	err := c.consulErr(fmt.Errorf("write x: %w", consulapi.StatusError{Code: 403,
		Body: `Permission denied: token with AccessorID 'abc' lacks permission 'key:write' on "rouse/services/default/hello"`}), "key:write", "rouse/")
	if got := err.Error(); got != "consul: permission denied: this token needs key:write on rouse/services/default/hello (CONSUL_HTTP_TOKEN)" {
		t.Fatal(got)
	}
	err = c.nomadErr(errors.New("Unexpected response code: 403 (Permission denied)"), "submit-job", "default")
	if got := err.Error(); got != "nomad: permission denied: this token needs submit-job on namespace default (NOMAD_TOKEN is not set)" {
		t.Fatal(got)
	}
	dial := &url.Error{Op: "Get", URL: "http://127.0.0.1:4646/v1/jobs", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}
	err = c.nomadErr(dial, "list-jobs", "default")
	if got := err.Error(); got != "cannot reach Nomad at http://127.0.0.1:4646: dial tcp: connect: connection refused (set NOMAD_ADDR)" {
		t.Fatal(got)
	}
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatal("not an UnreachableError")
	}
	if err := c.nomadErr(errors.New("Unexpected response code: 500 (boom)"), "read-job", "default"); !strings.HasPrefix(err.Error(), "nomad: ") {
		t.Fatal(err)
	}
}
