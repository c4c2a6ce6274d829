package control

import (
	"reflect"
	"testing"

	nomadapi "github.com/hashicorp/nomad/api"
)

func TestJobTasks(t *testing.T) {
	name := func(s string) *string { return &s }
	job := &nomadapi.Job{TaskGroups: []*nomadapi.TaskGroup{{
		Name:  name("app"),
		Tasks: []*nomadapi.Task{{Name: "init"}, {Name: "app"}, {Name: "tail"}},
	}, {
		Name:  name("other"),
		Tasks: []*nomadapi.Task{{Name: "x"}},
	}}}
	if got := jobTasks(job); !reflect.DeepEqual(got, []string{"app", "init", "tail"}) {
		t.Errorf("tasks %v, want the main task first, then the sidecars in order", got)
	}
}

func TestTaskError(t *testing.T) {
	e := &TaskError{Task: "nope", Tasks: map[string][]string{
		"web-00001": {"app"},
		"web-00002": {"app", "init", "tail"},
	}}
	want := `no task "nope": revision web-00002 has tasks app, init, tail; revision web-00001 has tasks app`
	if e.Error() != want {
		t.Errorf("got  %s\nwant %s", e.Error(), want)
	}
}

// TestFailureOfSidecars: an init task that exited 0 is not a failure; one that failed is
// named, rather than the main task's "sibling failed", whichever task Nomad lists first.
func TestFailureOfSidecars(t *testing.T) {
	done := &nomadapi.TaskEvent{Type: nomadapi.TaskTerminated, Details: map[string]string{"exit_code": "0"}}
	allocs := []*nomadapi.AllocationListStub{{ID: "a1", ClientStatus: "running", TaskStates: map[string]*nomadapi.TaskState{
		"init": {State: "dead", Events: []*nomadapi.TaskEvent{{Type: nomadapi.TaskStarted}, done}},
		"app":  {State: "running", Events: []*nomadapi.TaskEvent{{Type: nomadapi.TaskStarted}}},
	}}}
	if f := failureOf(allocs); f != nil {
		t.Fatalf("an init task that ran to completion is a failure: %+v", f)
	}
	// The main task exiting 0 still is: a server that exits is not serving.
	allocs[0].TaskStates["app"].Events = []*nomadapi.TaskEvent{done}
	if f := failureOf(allocs); f == nil || f.Reason != "Terminated: Exit Code: 0" {
		t.Fatalf("main task exited 0: %+v", f)
	}
	for range 20 { // map order varies
		allocs[0].TaskStates = map[string]*nomadapi.TaskState{
			"init": {State: "dead", Failed: true, Events: []*nomadapi.TaskEvent{
				{Type: nomadapi.TaskTerminated, ExitCode: 3, Details: map[string]string{"exit_code": "3"}}}},
			"app":  {State: "dead", Events: []*nomadapi.TaskEvent{{Type: nomadapi.TaskSiblingFailed, DisplayMessage: "Task's sibling \"init\" failed"}}},
			"tail": {State: "dead", Events: []*nomadapi.TaskEvent{{Type: nomadapi.TaskSiblingFailed, DisplayMessage: "Task's sibling \"init\" failed"}}},
		}
		if f := failureOf(allocs); f == nil || f.Reason != "sidecar init: Terminated: Exit Code: 3" {
			t.Fatalf("failed init task: %+v", f)
		}
	}
}
