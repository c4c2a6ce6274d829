package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rouse-run/rouse/internal/store"
)

// GCResult is what revision GC removed from one service.
type GCResult struct {
	Namespace string   `json:"namespace"`
	Service   string   `json:"service"`
	Purged    []string `json:"purged"`
}

// GC purges, for the service named (or every service of ns when svc is ""), the revisions
// without traffic beyond the newest keep, and revision configs whose job is gone.
func (c *Client) GC(ctx context.Context, ns, svc string, keep int, progress func(Event)) ([]GCResult, error) {
	if keep < 0 {
		return nil, fmt.Errorf("keep must be 0 or more, not %d", keep)
	}
	var names []string
	if svc != "" {
		names = []string{svc}
	} else {
		recs, err := c.store.ListServices(ctx, ns)
		if err != nil {
			return nil, c.consulErr(err, "key:read", store.ServiceKey(ns, ""))
		}
		for _, r := range recs {
			names = append(names, r.Name)
		}
	}
	var out []GCResult
	var errs []error
	for _, name := range names {
		rec, err := c.getService(ctx, ns, name)
		if err != nil {
			return out, err
		}
		if rec == nil {
			return out, &NotFoundError{Kind: "service", Name: name, Namespace: ns}
		}
		jobs, err := c.revisionJobs(ctx, ns, name)
		if err != nil {
			return out, err
		}
		purged, err := c.gcService(ctx, ns, name, keep, rec, jobs, progress)
		out = append(out, GCResult{Namespace: ns, Service: name, Purged: purged})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return out, errors.Join(errs...)
}

// gcPlan picks the revisions to purge: those beyond the newest keep among the ones that
// carry no traffic. Never purged: revisions in the route or named by the declared
// traffic, the latest and latest ready ones, and revisions newer than the latest ready
// one that are still starting (another apply may be waiting for them).
func gcPlan(rec *store.Service, jobs map[string]*revJob, readyGen, keep int) []string {
	protected := map[string]bool{rec.Latest: true, rec.LatestReady: true}
	for _, r := range rec.Route {
		protected[r.Revision] = true
	}
	for _, t := range rec.Traffic {
		protected[t.Revision] = true
	}
	var purge []string
	kept := 0
	for _, j := range byGeneration(jobs) {
		if protected[j.Name] || (!j.Stopped && j.Generation > readyGen) {
			continue
		}
		if kept < keep {
			kept++
			continue
		}
		purge = append(purge, j.Name)
	}
	return purge
}

func (c *Client) gcService(ctx context.Context, ns, svc string, keep int, rec *store.Service, jobs map[string]*revJob, progress func(Event)) ([]string, error) {
	if rec == nil {
		return nil, nil
	}
	gens := c.generations(ctx, ns, jobs)
	readyGen, err := gens.of(rec.LatestReady)
	if err != nil {
		return nil, err
	}
	purge := gcPlan(rec, jobs, readyGen, keep)
	var purged []string
	if len(purge) > 0 {
		// Re-read right before purging: a `rouse traffic` since the plan may have routed
		// to one of them.
		cur, err := c.getService(ctx, ns, svc)
		if err != nil {
			return nil, err
		}
		if cur != nil {
			purge = slices.DeleteFunc(purge, func(n string) bool {
				return slices.ContainsFunc(cur.Route, func(r store.RouteTarget) bool { return r.Revision == n })
			})
		}
		for _, name := range purge {
			emit(progress, StageClean, name, "Removing old revision %s…", name)
			if err := c.purgeRevision(ctx, ns, name); err != nil {
				return purged, err
			}
			purged = append(purged, name)
		}
	}
	// Configs whose job is gone (Nomad's own GC removed a stopped revision, or a purge
	// was interrupted). Only older than the latest ready one: a newer config may belong
	// to an apply that wrote it and is registering the job right now.
	cfgs, err := c.store.ListRevisions(ctx, ns)
	if err != nil {
		return purged, c.consulErr(err, "key:read", store.RevisionKey(ns, ""))
	}
	for _, cfg := range cfgs {
		if cfg.Service != svc || jobs[cfg.Revision] != nil || slices.Contains(purged, cfg.Revision) || cfg.Generation >= readyGen {
			continue
		}
		if err := c.store.DeleteRevision(ctx, ns, cfg.Revision); err != nil {
			return purged, c.consulErr(err, "key:write", store.RevisionKey(ns, cfg.Revision))
		}
	}
	return purged, nil
}

// purgeRevision removes a revision's job (purged, so its ID is free and Nomad forgets it)
// and its config.
func (c *Client) purgeRevision(ctx context.Context, ns, rev string) error {
	if _, _, err := c.nomad.Jobs().Deregister(rev, true, c.wo(ctx, ns)); err != nil && !isNotFound(err) {
		return c.nomadErr(err, "submit-job", ns)
	}
	if err := c.store.DeleteRevision(ctx, ns, rev); err != nil {
		return c.consulErr(err, "key:write", store.RevisionKey(ns, rev))
	}
	// A failure record the scaler wrote for it (see scaler/failure.go) goes with it.
	if err := c.store.DeleteFailure(ctx, ns, rev); err != nil {
		return c.consulErr(err, "key:write", store.FailureKey(ns, rev))
	}
	return nil
}

func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "404") || strings.Contains(s, "not found")
}
