package control

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/jobspec"
)

// ApplyOptions are the inputs of Apply.
type ApplyOptions struct {
	Spec   *jobspec.Spec
	Source string        // the HCL that was applied, kept in the service record
	Wait   time.Duration // how long a new revision may take to become ready; 0 = DefaultWait
	// Detach registers the revision and returns without waiting and without routing: the
	// route only ever points at revisions that proved ready. Applying the same spec again
	// picks the revision up, waits for it and routes.
	Detach bool
	// Keep is how many revisions without traffic survive GC; negative = no GC. The zero
	// value keeps none, so callers that mean "the usual" pass DefaultKeep.
	Keep int
	// Progress receives the steps as they happen (may be nil).
	Progress func(Event)
}

// Outcome says what an apply did.
type Outcome string

// Outcomes of Apply.
const (
	OutcomeCreated   Outcome = "created"   // a new revision is ready and routed
	OutcomeReused    Outcome = "reused"    // an existing revision of the same template is ready and routed
	OutcomeTraffic   Outcome = "traffic"   // same template, traffic changed
	OutcomeUnchanged Outcome = "unchanged" // nothing to do
	OutcomeDetached  Outcome = "detached"  // revision registered, not waited for, route untouched
)

// ApplyResult is what Apply did.
type ApplyResult struct {
	Namespace string              `json:"namespace"`
	Service   string              `json:"service"`
	Outcome   Outcome             `json:"outcome"`
	Revision  string              `json:"revision"` // the revision this spec's template runs as
	URL       string              `json:"url"`
	Route     []store.RouteTarget `json:"route"`
	Tags      []TagInfo           `json:"tags,omitempty"`
	// Image is the spec's image as written, ImageDigest the digest the revision runs
	// ("" for a command, or a tag that is not resolved).
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
	// AtZero: the revision starts at zero instances (autoscaling initial = 0, min = 0); it
	// was routed without starting one, and the first request wakes it.
	AtZero   bool     `json:"at_zero,omitempty"`
	Purged   []string `json:"purged,omitempty"`   // revisions removed by GC
	Warnings []string `json:"warnings,omitempty"` // things that went wrong after success
}

// TagInfo is a tag and the URL that reaches its revision.
type TagInfo struct {
	Tag      string `json:"tag"`
	Revision string `json:"revision"`
	URL      string `json:"url"`
}

// Apply makes the spec true: a new revision when its template changed (registered,
// waited for until an instance is ready, then routed), a route update when only traffic
// changed, nothing when nothing changed. An image's tag is resolved to a digest first,
// and the digest is part of the template; a tag that cannot be resolved is an
// *ImageError, before anything is written. A revision that fails is stopped and the route
// is left as it was; the error is a *RevisionFailedError saying why. A revision that
// starts at zero (initial = 0, min = 0) is planned, registered and routed without
// starting an instance.
func (c *Client) Apply(ctx context.Context, o ApplyOptions) (*ApplyResult, error) {
	if o.Spec == nil {
		return nil, errors.New("apply: no spec")
	}
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	s, warning, err := c.resolveImage(ctx, o.Spec, o.Progress)
	if err != nil {
		return nil, err
	}
	o.Spec = s
	ns, svc := s.Namespace, s.Name
	hash := s.TemplateHash()
	res := &ApplyResult{Namespace: ns, Service: svc, URL: c.urlOf(ns, svc, s.Visibility == store.VisibilityInternal), Image: s.Image,
		ImageDigest: cmp.Or(s.ImageDigest, jobspec.ImageDigestOf(s.Image))}
	if warning != "" {
		res.Warnings = append(res.Warnings, warning)
	}

	rec, err := c.getService(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	jobs, err := c.revisionJobs(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	// Traffic is checked before anything is created: a typo in a revision name must not
	// leave a new revision behind.
	if diags := jobspec.CheckTraffic(s, liveNames(jobs)); diags.HasErrors() {
		return nil, diags
	}

	if rec != nil && rec.SpecHash == hash && rec.LatestReady != "" && jobs[rec.LatestReady] != nil && !jobs[rec.LatestReady].Stopped {
		res.Revision = rec.LatestReady
		if slices.Equal(rec.Traffic, s.Traffic) && sameRouting(rec, s) {
			res.Outcome = OutcomeUnchanged
			res.Route, res.Tags = rec.Route, c.tagsOf(rec)
			c.finish(ctx, o, res, rec, jobs)
			return res, nil
		}
		emit(o.Progress, StageRoute, rec.LatestReady, "Routing traffic…")
		rec, err = c.updateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
			if cur == nil {
				return nil, &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
			}
			route, err := store.Resolve(s.Traffic, cur.LatestReady)
			if err != nil {
				return nil, err
			}
			cur.Traffic, cur.Route, cur.UpdatedAt = slices.Clone(s.Traffic), route, c.now().UTC()
			setRouting(cur, s)
			return cur, nil
		})
		if err != nil {
			return nil, err
		}
		res.Outcome, res.Route, res.Tags = OutcomeTraffic, rec.Route, c.tagsOf(rec)
		res.Warnings = append(res.Warnings, c.routeWarnings(ctx, ns, svc)...)
		res.Warnings = append(res.Warnings, c.visibilityWarnings(ctx, s)...)
		c.finish(ctx, o, res, rec, jobs)
		return res, nil
	}

	rev, gen, job, evalID, outcome, err := c.revisionFor(ctx, o, rec, jobs, hash)
	if err != nil {
		return nil, err
	}
	res.Revision, res.Outcome = rev, outcome
	if o.Detach {
		res.Outcome = OutcomeDetached
		if rec != nil {
			res.Route, res.Tags = rec.Route, c.tagsOf(rec)
		}
		emit(o.Progress, StageDone, rev, "Detached: revision %s is starting; the route is unchanged until `rouse apply` is run again and it is ready.", rev)
		return res, nil
	}

	if job != nil && groupCount(job) == 0 {
		// Nothing to wait for: Nomad's plan said a node can run it, and the gateway holds
		// the first request while the scaler wakes it.
		job, res.AtZero = nil, true
	}
	if job != nil {
		emit(o.Progress, StageWait, rev, "Waiting for instance…")
		if err := c.waitReady(ctx, ns, rev, evalID, readinessOf(job), o.Wait, o.Progress); err != nil {
			var rf *RevisionFailedError
			if errors.As(err, &rf) {
				// The failed revision is stopped, not purged: `nomad job status` and
				// `nomad alloc logs` still show what happened until `rouse gc` (or Nomad's
				// own job GC) removes it.
				if _, _, serr := c.nomad.Jobs().Deregister(rev, false, c.wo(context.WithoutCancel(ctx), ns)); serr != nil {
					rf.Events = append(rf.Events, "stopping the revision failed: "+c.nomadErr(serr, "submit-job", ns).Error())
				}
			}
			return nil, err
		}
	}

	if res.AtZero {
		emit(o.Progress, StageRoute, rev, "Routing traffic at zero (no instance started; the first request wakes it)…")
	} else {
		emit(o.Progress, StageRoute, rev, "Routing traffic…")
	}
	gens := c.generations(ctx, ns, jobs)
	gens.memo[rev] = gen
	explicit := s.RevisionName != ""
	rec, err = c.updateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
		if cur == nil {
			return nil, fmt.Errorf("service %s was deleted while revision %s was starting", svc, rev)
		}
		readyGen, err := gens.of(cur.LatestReady)
		if err != nil {
			return nil, err
		}
		// Two applies racing: the newer generation stays the latest ready one, whichever
		// finished first. An explicit revision_name is the user pointing at a revision.
		if gen >= readyGen || explicit {
			cur.LatestReady, cur.SpecHash, cur.Spec = rev, hash, o.Source
		}
		latestGen, err := gens.of(cur.Latest)
		if err != nil {
			return nil, err
		}
		if gen > latestGen || cur.Latest == "" {
			cur.Latest = rev
		}
		route, err := store.Resolve(s.Traffic, cur.LatestReady)
		if err != nil {
			return nil, err
		}
		cur.Traffic, cur.Route, cur.UpdatedAt = slices.Clone(s.Traffic), route, c.now().UTC()
		setRouting(cur, s)
		return cur, nil
	})
	if err != nil {
		return nil, err
	}
	res.Route, res.Tags = rec.Route, c.tagsOf(rec)
	res.Warnings = append(res.Warnings, c.routeWarnings(ctx, ns, svc)...)
	res.Warnings = append(res.Warnings, c.visibilityWarnings(ctx, s)...)
	jobs[rev] = &revJob{Name: rev, Generation: gen, SpecHash: hash}
	c.finish(ctx, o, res, rec, jobs)
	return res, nil
}

// finish runs revision GC after a successful apply (its failure is a warning: the apply
// itself succeeded) and reports Done.
func (c *Client) finish(ctx context.Context, o ApplyOptions, res *ApplyResult, rec *store.Service, jobs map[string]*revJob) {
	if o.Keep >= 0 {
		purged, err := c.gcService(ctx, res.Namespace, res.Service, o.Keep, rec, jobs, o.Progress)
		res.Purged = purged
		if err != nil {
			res.Warnings = append(res.Warnings, "revision GC: "+err.Error())
		}
	}
	switch {
	case res.Outcome == OutcomeUnchanged:
		emit(o.Progress, StageDone, res.Revision, "Unchanged: %s is serving. URL: %s", res.Revision, res.URL)
	case res.AtZero:
		emit(o.Progress, StageDone, res.Revision, "Done. %s is routed at zero: no instance started; the first request wakes it. URL: %s", res.Revision, res.URL)
	default:
		emit(o.Progress, StageDone, res.Revision, "Done. URL: %s", res.URL)
	}
}

// revisionFor returns the revision that runs the spec's template: an existing one of the
// same template that a previous apply left starting (or that an explicit revision_name
// names), or a new one registered now. job is nil when the revision needs no wait; a job
// at count 0 is routed at zero.
func (c *Client) revisionFor(ctx context.Context, o ApplyOptions, rec *store.Service, jobs map[string]*revJob, hash string) (rev string, gen int, job *nomadapi.Job, evalID string, out Outcome, err error) {
	s := o.Spec
	ns := s.Namespace
	var candidate *revJob
	if s.RevisionName != "" {
		if j := jobs[s.RevisionName]; j != nil {
			if j.SpecHash != hash {
				r := s.RangeOf("revision_name")
				return "", 0, nil, "", "", hcl.Diagnostics{{
					Severity: hcl.DiagError, Summary: "Revision already exists",
					Detail: fmt.Sprintf("Revision %q already exists with a different template, and revisions are immutable. "+
						"Choose a new revision_name, or remove it from the spec to get generated names.", j.Name),
					Subject: r.Ptr(),
				}}
			}
			candidate = j
		}
	} else if rec != nil && rec.Latest != "" && rec.Latest != rec.LatestReady {
		// A detached or interrupted apply of this very template: pick it up.
		if j := jobs[rec.Latest]; j != nil && !j.Stopped && j.SpecHash == hash {
			candidate = j
		}
	}
	if candidate != nil {
		job, _, err := c.nomad.Jobs().Info(candidate.Name, c.qo(ctx, ns))
		if err != nil {
			return "", 0, nil, "", "", c.nomadErr(err, "read-job", ns)
		}
		emit(o.Progress, StageCreate, candidate.Name, "Using existing revision %s…", candidate.Name)
		count := groupCount(job)
		switch {
		case candidate.Stopped:
			// It failed before; the same template may work now (an image pushed since).
			// Same spec, so re-registering keeps the revision immutable. It starts as a
			// new revision would: at zero when initial and min are 0.
			job.Stop = ptr(false)
			job.TaskGroups[0].Count = ptr(max(count, jobspec.InitialCount(s)))
			resp, _, err := c.nomad.Jobs().Register(job, c.wo(ctx, ns))
			if err != nil {
				return "", 0, nil, "", "", c.nomadErr(err, "submit-job", ns)
			}
			return candidate.Name, candidate.Generation, job, resp.EvalID, OutcomeReused, nil
		default:
			// At zero (it started there, or scaled down after it was ready), Apply routes it
			// without waiting: the gateway wakes it on demand.
			return candidate.Name, candidate.Generation, job, "", OutcomeReused, nil
		}
	}
	rev, gen, job, evalID, err = c.createRevision(ctx, o, jobs)
	return rev, gen, job, evalID, OutcomeCreated, err
}

// createRevision allocates a generation with a CAS on the service record (so concurrent
// applies get distinct ones), writes the revision's config to KV for the gateway, and
// registers its job — only if no job of that ID exists, so a revision is never
// overwritten.
func (c *Client) createRevision(ctx context.Context, o ApplyOptions, jobs map[string]*revJob) (string, int, *nomadapi.Job, string, error) {
	s := o.Spec
	ns, svc := s.Namespace, s.Name
	floor := 0 // generations in use by jobs that outlived their record
	for _, j := range jobs {
		floor = max(floor, j.Generation)
	}
	// Templates' Nomad Variables must exist before the revision does (variables.go).
	if err := c.checkVariables(ctx, s); err != nil {
		return "", 0, nil, "", err
	}
	// Ask Nomad to plan the job before anything is written: a token that may not submit
	// jobs, a job Nomad rejects, or one no node can run (a missing driver, constraints,
	// resources) then leaves no record, generation or config behind. The plan is for one
	// instance even when the revision starts at zero: it says whether the first request
	// could wake it.
	if rec, err := c.getService(ctx, ns, svc); err != nil {
		return "", 0, nil, "", err
	} else if draft, _, err := jobspec.Compile(s, max(floor, generationOf(rec))+1); err == nil {
		draft.TaskGroups[0].Count = ptr(max(groupCount(draft), 1))
		plan, _, err := c.nomad.Jobs().Plan(draft, false, c.wo(ctx, ns))
		if err != nil {
			return "", 0, nil, "", c.nomadErr(err, "submit-job", ns)
		}
		if reason := placementReason(plan.FailedTGAllocs); reason != "" {
			return "", 0, nil, "", &PlacementError{Revision: *draft.ID, Reason: reason}
		}
	}
	for attempt := 0; ; attempt++ {
		rec, err := c.updateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
			if cur == nil {
				cur = &store.Service{}
			}
			cur.Generation = max(cur.Generation, floor) + 1
			cur.UpdatedAt = c.now().UTC()
			return cur, nil
		})
		if err != nil {
			return "", 0, nil, "", err
		}
		gen := rec.Generation
		job, cfg, err := jobspec.Compile(s, gen)
		if err != nil {
			return "", 0, nil, "", fmt.Errorf("compile: %w", err)
		}
		rev := *job.ID
		// A config already in KV under a generated name belongs to a revision whose job
		// is gone or not listed yet: skip the name rather than overwrite it.
		if s.RevisionName == "" && attempt < 5 {
			existing, err := c.store.GetRevision(ctx, ns, rev)
			if err != nil {
				return "", 0, nil, "", c.consulErr(err, "key:read", store.RevisionKey(ns, rev))
			}
			if existing != nil {
				floor = gen
				continue
			}
		}
		emit(o.Progress, StageCreate, rev, "Creating revision %s…", rev)
		// The count is max(initial, min). With initial = 1 (the default) and min = 0,
		// readiness is proven with one instance and the scaler takes it down after the
		// grace period; with initial = 0 no instance starts until the first request
		// (Knative's allow-zero-initial-scale).
		job.Meta[revmeta.KeyCreated] = c.now().UTC().Format(time.RFC3339)
		if err := c.store.PutRevision(ctx, cfg); err != nil {
			return "", 0, nil, "", c.consulErr(err, "key:write", store.RevisionKey(ns, rev))
		}
		resp, _, err := c.nomad.Jobs().EnforceRegister(job, 0, c.wo(ctx, ns))
		if err != nil {
			if strings.Contains(err.Error(), "already exists") && s.RevisionName == "" && attempt < 5 {
				floor = gen
				continue
			}
			// Nothing was registered: take the config back so no orphan is left.
			_ = c.store.DeleteRevision(context.WithoutCancel(ctx), ns, rev)
			return "", 0, nil, "", c.nomadErr(err, "submit-job", ns)
		}
		// Record it as the latest created revision (unless a concurrent apply created a
		// newer one meanwhile).
		gens := c.generations(ctx, ns, jobs)
		gens.memo[rev] = gen
		_, err = c.updateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
			if cur == nil {
				return nil, fmt.Errorf("service %s was deleted while revision %s was being created", svc, rev)
			}
			lg, err := gens.of(cur.Latest)
			if err != nil {
				return nil, err
			}
			if gen > lg || cur.Latest == "" {
				cur.Latest = rev
			}
			return cur, nil
		})
		if err != nil {
			return "", 0, nil, "", err
		}
		return rev, gen, job, resp.EvalID, nil
	}
}

// groupCount is the instance count of a revision job's group.
func groupCount(job *nomadapi.Job) int {
	if len(job.TaskGroups) == 0 || job.TaskGroups[0].Count == nil {
		return 0
	}
	return *job.TaskGroups[0].Count
}

func generationOf(rec *store.Service) int {
	if rec == nil {
		return 0
	}
	return rec.Generation
}

// liveNames are the revisions that can take traffic: their job exists and is not stopped.
func liveNames(jobs map[string]*revJob) []string {
	var out []string
	for n, j := range jobs {
		if !j.Stopped {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// tagsOf lists the tagged targets of a service's route with their URLs (under the
// internal domain for an internal service).
func (c *Client) tagsOf(rec *store.Service) []TagInfo {
	var out []TagInfo
	for _, r := range rec.Route {
		if r.Tag != "" {
			out = append(out, TagInfo{Tag: r.Tag, Revision: r.Revision,
				URL: c.tagURLOf(rec.Namespace, rec.Name, r.Tag, rec.Visibility == store.VisibilityInternal)})
		}
	}
	return out
}

// sameRouting: the record already has the spec's visibility and tag-header routing (route
// settings, not the template's: a change of either is a route write, not a revision).
func sameRouting(rec *store.Service, s *jobspec.Spec) bool {
	return rec.Visibility == s.Visibility && rec.TagHeader == s.TagHeaderRouting
}

// setRouting writes the spec's visibility and tag-header routing into the record, in the
// same write as its route.
func setRouting(rec *store.Service, s *jobspec.Spec) {
	rec.Visibility, rec.TagHeader = s.Visibility, s.TagHeaderRouting
}

func ptr[T any](v T) *T { return &v }
