package control

import (
	"reflect"
	"testing"

	nomadapi "github.com/hashicorp/nomad/api"
)

func TestSplitLines(t *testing.T) {
	lines, rest := splitLines([]byte("a\nb\npartial"))
	if !reflect.DeepEqual(lines, []string{"a", "b"}) || string(rest) != "partial" {
		t.Errorf("got %q %q", lines, rest)
	}
	lines, rest = splitLines([]byte("no newline"))
	if lines != nil || string(rest) != "no newline" {
		t.Errorf("got %q %q", lines, rest)
	}
}

func TestInstancesToRead(t *testing.T) {
	stub := func(id, status string, idx uint64) *nomadapi.AllocationListStub {
		return &nomadapi.AllocationListStub{ID: id, ClientStatus: status, CreateIndex: idx}
	}
	ids := func(s []*nomadapi.AllocationListStub) (out []string) {
		for _, a := range s {
			out = append(out, a.ID)
		}
		return out
	}
	got := ids(instancesToRead([]*nomadapi.AllocationListStub{
		stub("c", "running", 30), stub("a", "complete", 40), stub("b", "running", 20)}))
	if !reflect.DeepEqual(got, []string{"b", "c"}) {
		t.Errorf("running instances, oldest first: got %v", got)
	}
	got = ids(instancesToRead([]*nomadapi.AllocationListStub{
		stub("a", "failed", 10), stub("b", "complete", 20)}))
	if !reflect.DeepEqual(got, []string{"b"}) {
		t.Errorf("none running: the newest, got %v", got)
	}
	if got := instancesToRead(nil); got != nil {
		t.Errorf("no allocations: %v", got)
	}
}

func TestNewInstances(t *testing.T) {
	stub := func(id, job, status string, idx uint64) *nomadapi.AllocationListStub {
		return &nomadapi.AllocationListStub{ID: id, JobID: job, ClientStatus: status, CreateIndex: idx}
	}
	stubs := []*nomadapi.AllocationListStub{
		stub("d", "web-00002", "running", 40), stub("a", "web-00001", "running", 10),
		stub("c", "web-00001", "running", 30), stub("b", "web-00001", "complete", 20),
	}
	seen := map[string]bool{"a": true}
	var got []string
	for _, s := range newInstances(stubs, seen, "") {
		got = append(got, s.ID)
	}
	if !reflect.DeepEqual(got, []string{"c", "d"}) {
		t.Errorf("running and unseen, oldest first: got %v", got)
	}
	got = nil
	for _, s := range newInstances(stubs, seen, "web-00002") {
		got = append(got, s.ID)
	}
	if !reflect.DeepEqual(got, []string{"d"}) {
		t.Errorf("only the revision asked for: got %v", got)
	}
}
