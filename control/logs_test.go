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
