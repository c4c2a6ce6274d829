package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// LogOptions selects what Logs reads.
type LogOptions struct {
	Revision string // "" = every revision of the service
	Stderr   bool   // stderr instead of stdout
	Tail     int    // lines per instance to start from (0: none; negative: 50)
	Follow   bool   // keep streaming, from instances that start later too, until ctx ends
	// Task is the task whose output to read: "" or revmeta.Task for the main one, or a
	// sidecar's name. Revisions without it are skipped; none with it is a *TaskError.
	Task string
}

// TaskError is a task that no revision asked for has: the tasks they have instead.
type TaskError struct {
	Task  string
	Tasks map[string][]string // revision → its tasks, main task first
}

func (e *TaskError) Error() string {
	revs := make([]string, 0, len(e.Tasks))
	for r := range e.Tasks {
		revs = append(revs, r)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(revs)))
	var b strings.Builder
	fmt.Fprintf(&b, "no task %q", e.Task)
	for i, r := range revs {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%srevision %s has tasks %s", sep, r, strings.Join(e.Tasks[r], ", "))
	}
	return b.String()
}

// LogLine is one line of one instance's output.
type LogLine struct {
	Revision string `json:"revision"`
	Instance string `json:"instance"` // the Nomad allocation ID, short
	Line     string `json:"line"`
}

// tailBytes is how far back from the end of a log Logs reads to find the last lines.
const tailBytes = 64 << 10

// Logs calls out with the output of a service's instances: the last Tail lines of each
// (the running instances; for a revision with none, its newest instance, so that the
// logs of one that failed or went to zero can still be read), then, with Follow, every new
// line as it is written, from all of them at once and from each instance that starts
// later, until ctx ends. out is never called concurrently.
func (c *Client) Logs(ctx context.Context, ns, svc string, o LogOptions, out func(LogLine)) error {
	if o.Tail < 0 {
		o.Tail = 50
	}
	jobs, err := c.revisionJobs(ctx, ns, svc)
	if err != nil {
		return err
	}
	if len(jobs) == 0 {
		return &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
	}
	if o.Revision != "" && jobs[o.Revision] == nil {
		return &NotFoundError{Kind: "revision", Name: o.Revision, Namespace: ns}
	}
	if o.Task == "" {
		o.Task = revmeta.Task
	}
	// Oldest revision first: the newest ends up nearest the prompt.
	revs := byGeneration(jobs)
	slices.Reverse(revs)
	if o.Task != revmeta.Task {
		var err error
		if revs, err = c.revisionsWithTask(ctx, ns, revs, o); err != nil {
			return err
		}
	}
	var allocs []*nomadapi.AllocationListStub
	for _, j := range revs {
		if o.Revision != "" && j.Name != o.Revision {
			continue
		}
		stubs, _, err := c.nomad.Jobs().Allocations(j.Name, false, c.qo(ctx, ns))
		if err != nil {
			return c.nomadErr(err, "read-job", ns)
		}
		allocs = append(allocs, instancesToRead(stubs)...)
	}
	stream := "stdout"
	if o.Stderr {
		stream = "stderr"
	}
	// Tails one instance after another, so that each instance's lines stay together.
	logs := make([]*instanceLog, 0, len(allocs))
	for _, a := range allocs {
		l, err := c.tailLog(ctx, ns, a, o.Task, stream, o.Tail, out)
		if err != nil {
			return err
		}
		if l != nil {
			logs = append(logs, l)
		}
	}
	if !o.Follow {
		for _, l := range logs {
			l.flush(out)
		}
		return nil
	}
	// Then every instance at once, and each one that starts while following: a service
	// that scales from zero or gets a new revision keeps showing up until Ctrl-C.
	fctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var mu sync.Mutex
	emit := func(l LogLine) {
		mu.Lock()
		defer mu.Unlock()
		out(l)
	}
	var wg sync.WaitGroup
	follow := func(l *instanceLog) {
		wg.Go(func() {
			if err := c.followLog(fctx, ns, l, emit); err != nil {
				stop(err)
			}
			mu.Lock()
			defer mu.Unlock()
			l.flush(out)
		})
	}
	seen := make(map[string]bool, len(allocs))
	for _, a := range allocs {
		seen[a.ID] = true
	}
	for _, l := range logs {
		follow(l)
	}
	if err := c.watchInstances(fctx, ns, svc, o.Revision, seen, func(a *nomadapi.AllocationListStub) {
		follow(newInstanceLog(a, ns, o.Task, stream, 0)) // new: all of its output is news
	}); err != nil {
		stop(err)
	}
	wg.Wait()
	if err := context.Cause(fctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil // the user stopped following
}

// watchInstances calls started with each running instance of the service (of rev, if set)
// that is not in seen, as Nomad starts them, until ctx ends. It blocks on Nomad's
// allocation list rather than polling.
func (c *Client) watchInstances(ctx context.Context, ns, svc, rev string, seen map[string]bool, started func(*nomadapi.AllocationListStub)) error {
	ours := map[string]bool{} // job ID → is a revision of svc
	var idx uint64
	for {
		q := c.qo(ctx, ns)
		q.WaitIndex, q.WaitTime = idx, 5*time.Minute
		q.Filter = `ClientStatus == "running"`
		stubs, meta, err := c.nomad.Allocations().List(q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return c.nomadErr(err, "read-job", ns)
		}
		idx = meta.LastIndex
		fresh := newInstances(stubs, seen, rev)
		for _, a := range fresh {
			if _, known := ours[a.JobID]; !known { // a revision created while following
				jobs, err := c.revisionJobs(ctx, ns, svc)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				for _, s := range fresh {
					ours[s.JobID] = jobs[s.JobID] != nil
				}
				break
			}
		}
		for _, a := range fresh {
			if ours[a.JobID] {
				seen[a.ID] = true
				started(a)
			}
		}
	}
}

// newInstances returns the running allocations not in seen (of job rev, if set), oldest
// first.
func newInstances(stubs []*nomadapi.AllocationListStub, seen map[string]bool, rev string) []*nomadapi.AllocationListStub {
	var out []*nomadapi.AllocationListStub
	for _, s := range stubs {
		if s.ClientStatus == nomadapi.AllocClientStatusRunning && !seen[s.ID] && (rev == "" || s.JobID == rev) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateIndex < out[j].CreateIndex })
	return out
}

// instancesToRead picks a revision's running allocations, or its newest one when none
// runs.
func instancesToRead(stubs []*nomadapi.AllocationListStub) []*nomadapi.AllocationListStub {
	var running []*nomadapi.AllocationListStub
	for _, s := range stubs {
		if s.ClientStatus == nomadapi.AllocClientStatusRunning {
			running = append(running, s)
		}
	}
	if len(running) > 0 {
		sort.Slice(running, func(i, j int) bool { return running[i].CreateIndex < running[j].CreateIndex })
		return running
	}
	var newest *nomadapi.AllocationListStub
	for _, s := range stubs {
		if newest == nil || s.CreateIndex > newest.CreateIndex {
			newest = s
		}
	}
	if newest == nil {
		return nil
	}
	return []*nomadapi.AllocationListStub{newest}
}

// instanceLog is one instance's log being read: where the tail ended and the partial
// line after it.
type instanceLog struct {
	alloc     *nomadapi.Allocation
	task      string
	stream    string
	rev, inst string
	end       int64
	pending   []byte
}

// newInstanceLog is the log of stub's instance from byte offset end on.
func newInstanceLog(stub *nomadapi.AllocationListStub, ns, task, stream string, end int64) *instanceLog {
	a := &nomadapi.Allocation{ID: stub.ID, Namespace: stub.Namespace, NodeID: stub.NodeID}
	if a.Namespace == "" {
		a.Namespace = ns
	}
	return &instanceLog{alloc: a, task: task, stream: stream, rev: stub.JobID, inst: short(stub.ID), end: end}
}

// flush emits the partial last line, if any.
func (l *instanceLog) flush(out func(LogLine)) {
	if len(l.pending) > 0 {
		out(LogLine{Revision: l.rev, Instance: l.inst, Line: string(l.pending)})
		l.pending = nil
	}
}

// lines emits the complete lines of data (after the pending partial one).
func (l *instanceLog) lines(data []byte, out func(LogLine)) {
	var ls []string
	ls, l.pending = splitLines(append(l.pending, data...))
	for _, s := range ls {
		out(LogLine{Revision: l.rev, Instance: l.inst, Line: s})
	}
}

// tailLog emits an instance's last tail lines. Positions are byte offsets from the start
// of the oldest log file Nomad keeps (it rotates them as <task>.<stream>.<n>), measured
// once: the tail is read up to that point and followLog starts exactly there, so no line
// written in between is lost or shown twice. nil: the instance or its logs are gone.
func (c *Client) tailLog(ctx context.Context, ns string, stub *nomadapi.AllocationListStub, task, stream string, tail int, out func(LogLine)) (*instanceLog, error) {
	l := newInstanceLog(stub, ns, task, stream, 0)
	end, err := c.logSize(ctx, ns, l.alloc, task, stream)
	if err != nil || end < 0 {
		return nil, err
	}
	l.end = end
	a := l.alloc
	if tail == 0 || end == 0 {
		return l, nil
	}
	start := max(0, end-tailBytes)
	var buf []byte
	err = c.readTaskFrames(ctx, ns, a, task, stream, false, nomadapi.OriginStart, start, func(f *nomadapi.StreamFrame) {
		buf = append(buf, f.Data...)
	})
	if err != nil {
		return nil, err
	}
	buf = buf[:min(int64(len(buf)), end-start)] // what was written since belongs to followLog
	lines, rest := splitLines(buf)
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for _, s := range lines {
		out(LogLine{Revision: l.rev, Instance: l.inst, Line: s})
	}
	l.pending = rest
	return l, nil
}

// followLog streams what the instance writes after its tail until ctx ends.
func (c *Client) followLog(ctx context.Context, ns string, l *instanceLog, out func(LogLine)) error {
	if l.task != revmeta.Task && !c.taskStarted(ctx, ns, l.alloc.ID, l.task) {
		return nil
	}
	return c.readTaskFrames(ctx, ns, l.alloc, l.task, l.stream, true, nomadapi.OriginStart, l.end, func(f *nomadapi.StreamFrame) {
		l.lines(f.Data, out)
	})
}

// taskStarted waits until the instance's task has started (a poststart sidecar starts
// after the instance runs, and Nomad streams no log before), and reports false when the
// instance has no such task (a revision without that sidecar), has ended, or ctx ends.
func (c *Client) taskStarted(ctx context.Context, ns, allocID, task string) bool {
	for {
		a, _, err := c.nomad.Allocations().Info(allocID, c.qo(ctx, ns))
		if err != nil {
			return false
		}
		ts := a.TaskStates[task]
		switch {
		case ts != nil && !ts.StartedAt.IsZero():
			return true
		case ts == nil && len(a.TaskStates) > 0, a.ClientTerminalStatus():
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// logSize is the size of all the log files of an instance's stream that Nomad keeps, -1
// when the instance is gone.
func (c *Client) logSize(ctx context.Context, ns string, a *nomadapi.Allocation, task, stream string) (int64, error) {
	files, _, err := c.nomad.AllocFS().List(a, "alloc/logs", c.qo(ctx, ns))
	if err != nil {
		if isNotFound(err) {
			return -1, nil
		}
		return 0, c.nomadErr(err, "read-logs", ns)
	}
	prefix := task + "." + stream + "."
	var n int64
	for _, f := range files {
		if strings.HasPrefix(f.Name, prefix) && !f.IsDir {
			n += f.Size
		}
	}
	return n, nil
}

// readFrames streams an instance's log from offset (counted from origin: the start of its
// oldest log file, or the end of its newest) into fn until it ends, or, following, until
// ctx does. A log that is gone reads as empty.
func (c *Client) readFrames(ctx context.Context, ns string, a *nomadapi.Allocation, stream string, follow bool, origin string, offset int64, fn func(*nomadapi.StreamFrame)) error {
	return c.readTaskFrames(ctx, ns, a, revmeta.Task, stream, follow, origin, offset, fn)
}

// readTaskFrames is readFrames for one task of the instance.
func (c *Client) readTaskFrames(ctx context.Context, ns string, a *nomadapi.Allocation, task, stream string, follow bool, origin string, offset int64, fn func(*nomadapi.StreamFrame)) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	frames, errc := c.nomad.AllocFS().Logs(a, follow, task, stream, origin, offset, sctx.Done(), c.qo(sctx, ns))
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return nil
			}
			if f != nil && len(f.Data) > 0 {
				fn(f)
			}
		case err := <-errc:
			if err == nil || ctx.Err() != nil {
				continue
			}
			if isNotFound(err) {
				return nil
			}
			return c.nomadErr(err, "read-logs", ns)
		case <-ctx.Done():
			return nil
		}
	}
}

// splitLines returns the complete lines of b and what follows the last newline.
func splitLines(b []byte) ([]string, []byte) {
	cut := bytes.LastIndexByte(b, '\n')
	if cut < 0 {
		return nil, b
	}
	return strings.Split(string(b[:cut]), "\n"), append([]byte(nil), b[cut+1:]...)
}

// revisionsWithTask keeps the revisions (o.Revision's alone, when set) whose group has
// task o.Task, in order; none is a *TaskError listing the tasks they have.
func (c *Client) revisionsWithTask(ctx context.Context, ns string, revs []*revJob, o LogOptions) ([]*revJob, error) {
	var keep []*revJob
	tasks := map[string][]string{}
	for _, j := range revs {
		if o.Revision != "" && j.Name != o.Revision {
			continue
		}
		job, _, err := c.nomad.Jobs().Info(j.Name, c.qo(ctx, ns))
		if err != nil {
			if isNotFound(err) { // purged meanwhile
				continue
			}
			return nil, c.nomadErr(err, "read-job", ns)
		}
		names := jobTasks(job)
		tasks[j.Name] = names
		if slices.Contains(names, o.Task) {
			keep = append(keep, j)
		}
	}
	if len(keep) == 0 {
		return nil, &TaskError{Task: o.Task, Tasks: tasks}
	}
	return keep, nil
}

// jobTasks are the task names of a revision's group, the main task first.
func jobTasks(job *nomadapi.Job) []string {
	var out []string
	for _, g := range job.TaskGroups {
		if g.Name == nil || *g.Name != revmeta.Group {
			continue
		}
		for _, t := range g.Tasks {
			if t.Name == revmeta.Task {
				out = append([]string{t.Name}, out...)
			} else {
				out = append(out, t.Name)
			}
		}
	}
	return out
}
