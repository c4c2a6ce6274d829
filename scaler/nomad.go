package scaler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// jobsAPI is the part of Nomad the scaler uses.
type jobsAPI interface {
	// List returns a namespace's jobs with their meta, and the listing's index. With
	// waitIndex > 0 it is a blocking query: it answers once the index passes waitIndex.
	List(ctx context.Context, namespace string, waitIndex uint64) ([]*nomadapi.JobListStub, uint64, error)
	// Count returns the group's count and the job's JobModifyIndex.
	Count(ctx context.Context, job jobKey) (count int, index uint64, err error)
	// Job reads one job as the listing would show it (meta, indexes, Stop) and the
	// group's count (at the stub's JobModifyIndex): a revision the listing has not yet.
	Job(ctx context.Context, job jobKey) (*nomadapi.JobListStub, int, error)
	// Scale sets the group's count and returns the job's new JobModifyIndex.
	Scale(ctx context.Context, job jobKey, count int, message string, meta map[string]any) (uint64, error)
}

type nomadJobs struct{ c *nomadapi.Client }

var _ jobsAPI = nomadJobs{}

// listWait bounds one blocking list; Nomad answers earlier on any change.
const listWait = 5 * time.Minute

func (n nomadJobs) List(ctx context.Context, ns string, waitIndex uint64) ([]*nomadapi.JobListStub, uint64, error) {
	q := (&nomadapi.QueryOptions{Namespace: ns, WaitIndex: waitIndex, WaitTime: listWait}).WithContext(ctx)
	stubs, qm, err := n.c.Jobs().ListOptions(&nomadapi.JobListOptions{Fields: &nomadapi.JobListFields{Meta: true}}, q)
	if err != nil {
		return nil, 0, fmt.Errorf("list jobs in namespace %q: %w", ns, err)
	}
	return stubs, qm.LastIndex, nil
}

func (n nomadJobs) Count(ctx context.Context, job jobKey) (int, uint64, error) {
	q := (&nomadapi.QueryOptions{Namespace: job.ns}).WithContext(ctx)
	st, _, err := n.c.Jobs().ScaleStatus(job.id, q)
	if err != nil {
		return 0, 0, err
	}
	g, ok := st.TaskGroups[revmeta.Group]
	if !ok {
		return 0, 0, fmt.Errorf("job %s has no group %q", job.id, revmeta.Group)
	}
	return g.Desired, st.JobModifyIndex, nil
}

func (n nomadJobs) Job(ctx context.Context, job jobKey) (*nomadapi.JobListStub, int, error) {
	q := (&nomadapi.QueryOptions{Namespace: job.ns}).WithContext(ctx)
	j, _, err := n.c.Jobs().Info(job.id, q)
	if err != nil {
		return nil, 0, err
	}
	stub := &nomadapi.JobListStub{ID: deref(j.ID), Namespace: deref(j.Namespace), Meta: j.Meta, Stop: deref(j.Stop),
		CreateIndex: deref(j.CreateIndex), JobModifyIndex: deref(j.JobModifyIndex)}
	for _, g := range j.TaskGroups {
		if deref(g.Name) == revmeta.Group {
			return stub, deref(g.Count), nil
		}
	}
	return nil, 0, fmt.Errorf("job %s has no group %q", job.id, revmeta.Group)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func (n nomadJobs) Scale(ctx context.Context, job jobKey, count int, message string, meta map[string]any) (uint64, error) {
	w := (&nomadapi.WriteOptions{Namespace: job.ns}).WithContext(ctx)
	resp, _, err := n.c.Jobs().Scale(job.id, revmeta.Group, &count, message, false, meta, w)
	if err != nil {
		return 0, err
	}
	return resp.JobModifyIndex, nil
}

// scaleErrorKind sorts Nomad's answers to Jobs.Scale into what an operator acts on.
func scaleErrorKind(err error) string {
	var ure nomadapi.UnexpectedResponseError
	status := 0
	if errors.As(err, &ure) {
		status = ure.StatusCode()
	}
	msg := strings.ToLower(err.Error())
	switch {
	case status == http.StatusNotFound || strings.Contains(msg, "not found"):
		return "job_gone"
	case status == http.StatusForbidden || strings.Contains(msg, "permission denied"):
		return "acl_denied"
	case strings.Contains(msg, "active deployment"):
		return "deployment_lock"
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// scaleErrorHint is the sentence the log adds for each kind.
func scaleErrorHint(kind string) string {
	switch kind {
	case "job_gone":
		return "the job was deleted or purged; forgetting it"
	case "acl_denied":
		return "the Nomad token lacks the scale-job capability (or submit-job) in this namespace; grant it to the scaler's policy"
	case "deployment_lock":
		return "the job has an active deployment (nomad#8143); rouse revisions set update { max_parallel = 0 } so they never do — was this job created or changed outside rouse?"
	case "timeout":
		return "Nomad did not answer in time; retrying next tick"
	}
	return "retrying next tick"
}
