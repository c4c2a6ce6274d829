package control

import (
	"context"
	"slices"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/store"
)

// DeleteResult is what Delete removed.
type DeleteResult struct {
	Namespace string   `json:"namespace"`
	Service   string   `json:"service"`
	Revisions []string `json:"revisions"`
	Warnings  []string `json:"warnings,omitempty"`
}

// Delete removes a service: its record first, then, once every gateway has dropped the
// route (awaitGateways), every revision job (purged) and revision config, and waits (up to
// wait) until Consul no longer lists any of its instances. Re-running it after an
// interruption finishes the job.
func (c *Client) Delete(ctx context.Context, ns, svc string, wait time.Duration, progress func(Event)) (*DeleteResult, error) {
	if wait <= 0 {
		wait = DefaultWait
	}
	rec, err := c.getService(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	jobs, err := c.revisionJobs(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	cfgs, err := c.store.ListRevisions(ctx, ns)
	if err != nil {
		return nil, c.consulErr(err, "key:read", store.RevisionKey(ns, ""))
	}
	var revs []string
	for n := range jobs {
		revs = append(revs, n)
	}
	for _, cfg := range cfgs {
		if cfg.Service == svc && !slices.Contains(revs, cfg.Revision) {
			revs = append(revs, cfg.Revision)
		}
	}
	slices.Sort(revs)
	if rec == nil && len(revs) == 0 {
		return nil, &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
	}
	res := &DeleteResult{Namespace: ns, Service: svc, Revisions: revs}

	emit(progress, StageRoute, "", "Removing route…")
	if err := c.store.DeleteService(ctx, ns, svc); err != nil {
		return nil, c.consulErr(err, "key:write", store.ServiceKey(ns, svc))
	}
	if rec != nil { // instances are stopped only once the gateways no longer send them requests
		res.Warnings = append(res.Warnings, c.deletedRouteWarnings(ctx, ns, svc)...)
	}
	for _, rev := range revs {
		emit(progress, StageClean, rev, "Removing revision %s…", rev)
		if err := c.purgeRevision(ctx, ns, rev); err != nil {
			return nil, err
		}
	}

	emit(progress, StageWait, "", "Waiting for instances to stop…")
	deadline := c.now().Add(wait)
	for left := slices.Clone(revs); len(left) > 0; {
		var still []string
		for _, rev := range left {
			es, _, err := c.consul.Catalog().Service(rev, "", (&consulapi.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return nil, c.consulErr(err, "service:read", rev)
			}
			if len(es) > 0 {
				still = append(still, rev)
			}
		}
		left = still
		if len(left) == 0 {
			break
		}
		if c.now().After(deadline) {
			res.Warnings = append(res.Warnings, "Consul still lists instances of "+strings.Join(left, ", ")+"; Nomad is stopping them")
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(c.poll):
		}
	}
	emit(progress, StageDone, "", "Deleted service %s.", svc)
	return res, nil
}
