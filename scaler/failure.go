package scaler

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// A revision that fails while waking (failwatch.go runs this; here is the pure part):
// every allocation of the wake failed — Nomad's restart policy gave up on it (jobspec:
// one restart after 1 s, then the allocation fails) — and none is starting or running.
// The scaler then publishes why (a store.Failure the gateways answer held requests with),
// sets the count to 0 so Nomad stops rescheduling, and does not start the revision again
// before a backoff passes: failBackoffMin doubling to failBackoffMax, reset when an
// instance of it becomes ready.

const (
	failBackoffMin = 10 * time.Second
	failBackoffMax = 5 * time.Minute
	// stderrHead is how much of a failed task's stderr is read to find its first line.
	stderrHead = 4 << 10
)

// failBackoff is how long a revision stays at zero after its attempt-th failure in a row
// (attempt ≥ 1): 10 s, 20 s, 40 s, … 5 min.
func failBackoff(attempt int) time.Duration {
	d := failBackoffMin
	for i := 1; i < attempt && d < failBackoffMax; i++ {
		d *= 2
	}
	return min(d, failBackoffMax)
}

// allocsVerdict is what a job's allocations say about the wake since an index.
type allocsVerdict struct {
	alive  bool                         // an allocation Nomad wants is starting or running
	failed *nomadapi.AllocationListStub // none alive: the newest allocation of the wake that failed
}

// assessAllocs reads a revision's allocations. Alive: desired "run" and pending or running
// (an allocation between its restarts is pending). Failed: created after since (the
// JobModifyIndex of the count that asked for it; older ones belong to earlier wakes) and
// failed, or complete though Nomad still wants it running (a service task that exited on
// its own). Stopped, lost and older allocations say nothing.
func assessAllocs(allocs []*nomadapi.AllocationListStub, since uint64) allocsVerdict {
	var v allocsVerdict
	for _, a := range allocs {
		switch {
		case a.DesiredStatus == nomadapi.AllocDesiredStatusRun &&
			(a.ClientStatus == nomadapi.AllocClientStatusPending || a.ClientStatus == nomadapi.AllocClientStatusRunning):
			return allocsVerdict{alive: true}
		case a.CreateIndex <= since:
		case a.ClientStatus == nomadapi.AllocClientStatusFailed,
			a.ClientStatus == nomadapi.AllocClientStatusComplete && a.DesiredStatus == nomadapi.AllocDesiredStatusRun:
			if v.failed == nil || a.CreateIndex > v.failed.CreateIndex ||
				(a.CreateIndex == v.failed.CreateIndex && a.ModifyIndex > v.failed.ModifyIndex) {
				v.failed = a
			}
		}
	}
	return v
}

// taskEnd is what Nomad's task events say about how the app's task ended.
type taskEnd struct {
	exited bool   // a Terminated event: exit and signal are known
	exit   int    // exit code
	signal int    // the signal that killed it, 0 for none
	oom    bool   // killed for exceeding its memory
	event  string // the DisplayMessage of the event that ended it
}

// quietEvents are task events that never say why a task failed.
var quietEvents = map[string]bool{
	nomadapi.TaskReceived: true, nomadapi.TaskSetup: true, nomadapi.TaskStarted: true,
	nomadapi.TaskDriverMessage: true, nomadapi.TaskRestarting: true, nomadapi.TaskNotRestarting: true,
	nomadapi.TaskKilling: true, nomadapi.TaskKilled: true, nomadapi.TaskBuildingTaskDir: true,
	nomadapi.TaskDownloadingArtifacts: true, nomadapi.TaskSignaling: true, nomadapi.TaskRestartSignal: true,
	nomadapi.TaskClientReconnected: true, "Task hook message": true,
}

// lastTaskEnd finds, newest first, the event that ended the app's task in a.
func lastTaskEnd(a *nomadapi.AllocationListStub) taskEnd {
	ts := a.TaskStates[revmeta.Task]
	if ts == nil {
		return taskEnd{}
	}
	for i := len(ts.Events) - 1; i >= 0; i-- {
		e := ts.Events[i]
		if e == nil || quietEvents[e.Type] {
			continue
		}
		end := taskEnd{event: strings.TrimSpace(e.DisplayMessage)}
		if e.Type == nomadapi.TaskTerminated {
			end.exited = true
			end.exit, end.signal = e.ExitCode, e.Signal
			if v, err := strconv.Atoi(e.Details["exit_code"]); err == nil {
				end.exit = v
			}
			if v, err := strconv.Atoi(e.Details["signal"]); err == nil {
				end.signal = v
			}
			end.oom = e.Details["oom_killed"] == "true"
		}
		if end.event == "" {
			end.event = e.Type
		}
		return end
	}
	return taskEnd{}
}

// failureReason is the one line a client is told: the first line of the task's stderr
// with how it ended ("boom: config missing (exit 3)"), else Nomad's event ("Exit Code: 3",
// "Driver Failure: …"), else the allocation's own description.
func failureReason(stderrLine string, a *nomadapi.AllocationListStub) string {
	stderrLine = store.CleanReason(stderrLine)
	end := lastTaskEnd(a)
	how := ""
	switch {
	case end.oom:
		how = "out of memory"
	case end.exited && end.signal != 0:
		how = "signal " + strconv.Itoa(end.signal)
	case end.exited:
		how = "exit " + strconv.Itoa(end.exit)
	}
	var reason string
	switch {
	case stderrLine != "" && how != "":
		reason = stderrLine + " (" + how + ")"
	case stderrLine != "":
		reason = stderrLine
	case end.event != "":
		reason = end.event
	case a.ClientDescription != "":
		reason = a.ClientDescription
	default:
		reason = "its allocation " + a.ClientStatus
	}
	return store.CleanReason(reason)
}

// firstLine is the first line of b with anything but space in it ("" for none).
func firstLine(b []byte) string {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if s := strings.TrimSpace(string(line)); s != "" {
			return s
		}
	}
	return ""
}
