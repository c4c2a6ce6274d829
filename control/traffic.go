package control

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/rouse-run/rouse/internal/store"
)

// TrafficUpdate changes a service's traffic, as `kn service update --traffic/--tag/--untag`.
type TrafficUpdate struct {
	// Split replaces the percentages when non-empty. Tags of the current split stay on
	// their revisions (as 0 % entries if the revision leaves the split) unless untagged.
	Split []store.TrafficTarget
	// Tags attach a tag to a revision (Revision set) or to the latest ready one (Latest);
	// a revision outside the split joins it with 0 %. A tag moves if it was elsewhere.
	Tags []store.TrafficTarget
	// Untag removes tags.
	Untag []string
}

// TrafficResult is the traffic after a change.
type TrafficResult struct {
	Namespace string                `json:"namespace"`
	Service   string                `json:"service"`
	URL       string                `json:"url"`
	Traffic   []store.TrafficTarget `json:"traffic"`
	Route     []store.RouteTarget   `json:"route"`
	Tags      []TagInfo             `json:"tags,omitempty"`
	Warnings  []string              `json:"warnings,omitempty"` // the write landed; something after it did not
}

// SetTraffic validates and writes a traffic change with check-and-set. It is an override:
// the next `rouse apply` makes the spec's traffic (default: 100 % latest) true again, as
// `kubectl apply` does with a Knative Service.
func (c *Client) SetTraffic(ctx context.Context, ns, svc string, u TrafficUpdate) (*TrafficResult, error) {
	jobs, err := c.revisionJobs(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	live := liveNames(jobs)
	rec, err := c.updateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
		if cur == nil {
			return nil, &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
		}
		traffic, err := updateTraffic(cur.Traffic, u)
		if err != nil {
			return nil, err
		}
		route, err := c.checkTraffic(svc, traffic, cur.LatestReady, live)
		if err != nil {
			return nil, err
		}
		cur.Traffic, cur.Route, cur.UpdatedAt = traffic, route, c.now().UTC()
		return cur, nil
	})
	if err != nil {
		return nil, err
	}
	res := c.trafficResult(rec)
	res.Warnings = c.routeWarnings(ctx, ns, svc)
	return res, nil
}

func (c *Client) trafficResult(rec *store.Service) *TrafficResult {
	return &TrafficResult{Namespace: rec.Namespace, Service: rec.Name, URL: c.urlOf(rec.Namespace, rec.Name, rec.Visibility == store.VisibilityInternal),
		Traffic: rec.Traffic, Route: rec.Route, Tags: c.tagsOf(rec)}
}

// RollbackResult says where traffic went.
type RollbackResult struct {
	TrafficResult
	From string `json:"from,omitempty"`
	To   string `json:"to"`
}

// Rollback routes 100 % of traffic to rev, or, when rev is "", to the newest ready
// revision older than the one serving most traffic now. Tags stay where they were.
func (c *Client) Rollback(ctx context.Context, ns, svc, rev string) (*RollbackResult, error) {
	jobs, err := c.revisionJobs(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	rec, err := c.getService(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
	}
	gens := c.generations(ctx, ns, jobs)
	readyGen, err := gens.of(rec.LatestReady)
	if err != nil {
		return nil, err
	}
	from := primary(rec.Route, jobs)
	if rev == "" {
		fromGen := readyGen + 1
		if j := jobs[from]; j != nil {
			fromGen = j.Generation
		}
		for _, j := range byGeneration(jobs) {
			if !j.Stopped && j.Generation < fromGen && j.Generation <= readyGen {
				rev = j.Name
				break
			}
		}
		if rev == "" {
			return nil, fmt.Errorf("service %s has no ready revision older than %s to roll back to", svc, from)
		}
	} else {
		j := jobs[rev]
		switch {
		case j == nil:
			return nil, &NotFoundError{Kind: "revision", Name: rev, Namespace: ns}
		case j.Stopped:
			return nil, fmt.Errorf("revision %s failed or was stopped; it cannot take traffic", rev)
		case j.Generation > readyGen && !routed(rec.Route, rev):
			return nil, fmt.Errorf("revision %s has not become ready yet", rev)
		}
	}
	live := liveNames(jobs)
	rec, err = c.updateService(ctx, ns, svc, func(cur *store.Service) (*store.Service, error) {
		if cur == nil {
			return nil, &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
		}
		traffic, err := updateTraffic(cur.Traffic, TrafficUpdate{Split: []store.TrafficTarget{{Revision: rev, Percent: 100}}})
		if err != nil {
			return nil, err
		}
		route, err := c.checkTraffic(svc, traffic, cur.LatestReady, live)
		if err != nil {
			return nil, err
		}
		cur.Traffic, cur.Route, cur.UpdatedAt = traffic, route, c.now().UTC()
		return cur, nil
	})
	if err != nil {
		return nil, err
	}
	res := &RollbackResult{TrafficResult: *c.trafficResult(rec), From: from, To: rev}
	res.Warnings = c.routeWarnings(ctx, ns, svc)
	return res, nil
}

// primary is the revision that serves the largest share (the newest on a tie).
func primary(route []store.RouteTarget, jobs map[string]*revJob) string {
	best, bestPct, bestGen := "", -1, -1
	for _, r := range route {
		g := 0
		if j := jobs[r.Revision]; j != nil {
			g = j.Generation
		}
		if r.Percent > bestPct || (r.Percent == bestPct && g > bestGen) {
			best, bestPct, bestGen = r.Revision, r.Percent, g
		}
	}
	return best
}

func routed(route []store.RouteTarget, rev string) bool {
	return slices.ContainsFunc(route, func(r store.RouteTarget) bool { return r.Revision == rev && r.Percent > 0 })
}

func sameTarget(a, b store.TrafficTarget) bool {
	return a.Latest == b.Latest && (a.Latest || a.Revision == b.Revision)
}

func targetName(t store.TrafficTarget) string {
	if t.Latest {
		return "@latest"
	}
	return t.Revision
}

// updateTraffic applies u to the current declared traffic. It is pure, for the CAS loop.
func updateTraffic(cur []store.TrafficTarget, u TrafficUpdate) ([]store.TrafficTarget, error) {
	untag := func(tag string) bool { return slices.Contains(u.Untag, tag) }
	var out []store.TrafficTarget
	if len(u.Split) > 0 {
		for _, t := range u.Split {
			t.Tag = ""
			// One entry per target: "a=50 a=50" is a mistake worth reporting.
			if slices.ContainsFunc(out, func(o store.TrafficTarget) bool { return sameTarget(o, t) }) {
				return nil, fmt.Errorf("%s appears twice in the split", targetName(t))
			}
			out = append(out, t)
		}
		// Carry the tags over: a tag is a stable name for a revision, not a share.
		for _, t := range cur {
			if t.Tag == "" || untag(t.Tag) {
				continue
			}
			if i := slices.IndexFunc(out, func(o store.TrafficTarget) bool { return sameTarget(o, t) && o.Tag == "" }); i >= 0 {
				out[i].Tag = t.Tag
			} else {
				out = append(out, store.TrafficTarget{Revision: t.Revision, Latest: t.Latest, Tag: t.Tag})
			}
		}
	} else {
		out = slices.Clone(cur)
		for i := range out {
			if untag(out[i].Tag) {
				out[i].Tag = ""
			}
		}
	}
	for _, tag := range u.Untag {
		if !slices.ContainsFunc(cur, func(t store.TrafficTarget) bool { return t.Tag == tag }) {
			return nil, fmt.Errorf("no traffic target has tag %q", tag)
		}
	}
	for _, want := range u.Tags {
		// Move: the tag leaves wherever it was.
		for i := range out {
			if out[i].Tag == want.Tag {
				out[i].Tag = ""
			}
		}
		if i := slices.IndexFunc(out, func(o store.TrafficTarget) bool { return sameTarget(o, want) && o.Tag == "" }); i >= 0 {
			out[i].Tag = want.Tag
		} else {
			out = append(out, store.TrafficTarget{Revision: want.Revision, Latest: want.Latest, Tag: want.Tag})
		}
	}
	// Entries left with neither a share nor a tag say nothing.
	out = slices.DeleteFunc(out, func(t store.TrafficTarget) bool { return t.Percent == 0 && t.Tag == "" })
	return out, nil
}

var tagRE = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// checkTraffic validates declared traffic and resolves it into a route.
func (c *Client) checkTraffic(svc string, traffic []store.TrafficTarget, latestReady string, live []string) ([]store.RouteTarget, error) {
	sum := 0
	tags := map[string]bool{}
	for _, t := range traffic {
		if t.Percent < 0 || t.Percent > 100 {
			return nil, fmt.Errorf("%s=%d: a percentage is between 0 and 100", targetName(t), t.Percent)
		}
		sum += t.Percent
		if !t.Latest && !slices.Contains(live, t.Revision) {
			return nil, fmt.Errorf("service %s has no revision %q that can take traffic (revisions: %s)", svc, t.Revision, strings.Join(live, ", "))
		}
		if t.Tag != "" {
			if tags[t.Tag] {
				return nil, fmt.Errorf("tag %q is used twice", t.Tag)
			}
			tags[t.Tag] = true
			if !tagRE.MatchString(t.Tag) || len(t.Tag)+1+len(svc) > 63 {
				return nil, fmt.Errorf("tag %q: a tag is lower-case letters, digits and '-', starts with a letter, and <tag>-%s fits in 63 characters", t.Tag, svc)
			}
		}
	}
	if sum != 100 {
		return nil, fmt.Errorf("traffic percentages sum to %d, not 100", sum)
	}
	return store.Resolve(traffic, latestReady)
}
