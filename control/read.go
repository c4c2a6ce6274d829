package control

import (
	"context"
	"fmt"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/store"
)

// Condition statuses, as Knative reports them.
const (
	True    = "True"
	False   = "False"
	Unknown = "Unknown"
)

// Revision statuses.
const (
	RevisionReady    = "Ready"    // passed readiness once; may be scaled to zero now
	RevisionCreating = "Creating" // registered, not ready yet
	RevisionFailed   = "Failed"   // did not become ready (its job is stopped)
)

// ServiceSummary is one line of `rouse list`.
type ServiceSummary struct {
	Namespace   string              `json:"namespace"`
	Name        string              `json:"name"`
	URL         string              `json:"url"`
	Generation  int                 `json:"generation"`
	Latest      string              `json:"latest_created_revision"`
	LatestReady string              `json:"latest_ready_revision"`
	Route       []store.RouteTarget `json:"route"`
	Ready       string              `json:"ready"` // True, False or Unknown
	UpdatedAt   time.Time           `json:"updated_at"`
	// Visibility is "internal" for a service served only on the gateways' internal
	// listener (its URL is then under the internal domain), "" for public.
	Visibility string `json:"visibility,omitempty"`
	// TagHeaderRouting: a Rouse-Tag header on its main host picks the tag's revision.
	TagHeaderRouting bool `json:"tag_header_routing,omitempty"`
}

// RevisionInfo is one revision of a service.
type RevisionInfo struct {
	Name        string    `json:"name"`
	Generation  int       `json:"generation"`
	SpecHash    string    `json:"spec_hash"`
	Image       string    `json:"image,omitempty"`        // as the spec wrote it; "" for a command
	ImageDigest string    `json:"image_digest,omitempty"` // what it runs; "" when it follows the tag
	Status      string    `json:"status"`
	Reason      string    `json:"reason,omitempty"` // why it failed
	Percent     int       `json:"percent"`
	Tags        []string  `json:"tags,omitempty"`
	Latest      bool      `json:"latest_created"`
	LatestReady bool      `json:"latest_ready"`
	Ready       int       `json:"ready_instances"`   // passing their Consul readiness check
	Desired     int       `json:"desired_instances"` // the Nomad group count
	Created     time.Time `json:"created"`
	// The autoscaling knobs shown when set: Knative's scale-down-delay ("5m0s") and
	// activation-scale.
	ScaleDownDelay  string `json:"scale_down_delay,omitempty"`
	ActivationScale int    `json:"activation_scale,omitempty"`
}

// Condition is a Knative-style condition.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// ServiceDetail is `rouse describe`.
type ServiceDetail struct {
	ServiceSummary
	Traffic    []store.TrafficTarget `json:"traffic"`
	Tags       []TagInfo             `json:"tags,omitempty"`
	Revisions  []RevisionInfo        `json:"revisions"`
	Conditions []Condition           `json:"conditions"`
}

// List returns the services of ns ("" = every namespace).
func (c *Client) List(ctx context.Context, ns string) ([]ServiceSummary, error) {
	recs, err := c.store.ListServices(ctx, ns)
	if err != nil {
		return nil, c.consulErr(err, "key:read", store.ServiceKey(ns, ""))
	}
	if len(recs) == 0 {
		// Consul filters a listing down to what the token may read, silently; reading the
		// prefix itself fails loudly when the token may read nothing there.
		key := store.ServiceKey(ns, "")
		if ns == "" {
			key = store.Prefix + "services/"
		}
		if _, _, err := c.consul.KV().Get(key, (&consulapi.QueryOptions{}).WithContext(ctx)); err != nil {
			return nil, c.consulErr(err, "key:read", key)
		}
	}
	out := make([]ServiceSummary, 0, len(recs))
	for _, r := range recs {
		s := c.summary(r)
		if r.Latest != r.LatestReady && r.Latest != "" {
			// Only this case needs Nomad: is the newer revision starting or failed?
			j, _, err := c.nomad.Jobs().Info(r.Latest, c.qo(ctx, r.Namespace))
			switch {
			case err != nil && !isNotFound(err):
				return nil, c.nomadErr(err, "read-job", r.Namespace)
			case err == nil && j.Stop != nil && *j.Stop:
				s.Ready = False
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func (c *Client) summary(r *store.Service) ServiceSummary {
	s := ServiceSummary{Namespace: r.Namespace, Name: r.Name, URL: c.urlOf(r.Namespace, r.Name, r.Visibility == store.VisibilityInternal),
		Generation: r.Generation, Latest: r.Latest, LatestReady: r.LatestReady, Route: r.Route, UpdatedAt: r.UpdatedAt,
		Visibility: r.Visibility, TagHeaderRouting: r.TagHeader}
	switch {
	case len(r.Route) == 0:
		s.Ready = Unknown
	case r.Latest == r.LatestReady || r.Latest == "":
		s.Ready = True
	default:
		s.Ready = Unknown
	}
	return s
}

// Revisions lists a service's revisions, newest first.
func (c *Client) Revisions(ctx context.Context, ns, svc string) ([]RevisionInfo, error) {
	rec, err := c.getService(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	jobs, err := c.revisionJobs(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	if rec == nil && len(jobs) == 0 {
		return nil, &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
	}
	if rec == nil {
		rec = &store.Service{Namespace: ns, Name: svc}
	}
	return c.revisionInfos(ctx, ns, rec, jobs)
}

func (c *Client) revisionInfos(ctx context.Context, ns string, rec *store.Service, jobs map[string]*revJob) ([]RevisionInfo, error) {
	gens := c.generations(ctx, ns, jobs)
	readyGen, err := gens.of(rec.LatestReady)
	if err != nil {
		return nil, err
	}
	out := []RevisionInfo{}
	for _, j := range byGeneration(jobs) {
		ri := RevisionInfo{Name: j.Name, Generation: j.Generation, SpecHash: j.SpecHash, Created: j.Created,
			Image: j.Image, ImageDigest: j.Digest,
			Latest: j.Name == rec.Latest, LatestReady: j.Name == rec.LatestReady, ActivationScale: j.ActivationScale}
		if j.ScaleDownDelay > 0 {
			ri.ScaleDownDelay = j.ScaleDownDelay.String()
		}
		for _, r := range rec.Route {
			if r.Revision == j.Name {
				ri.Percent += r.Percent
				if r.Tag != "" {
					ri.Tags = append(ri.Tags, r.Tag)
				}
			}
		}
		switch {
		case j.Stopped:
			ri.Status = RevisionFailed
			allocs, _, err := c.nomad.Jobs().Allocations(j.Name, false, c.qo(ctx, ns))
			if err == nil {
				if f := failureOf(allocs); f != nil {
					ri.Reason = f.Reason
				}
			}
			if ri.Reason == "" {
				ri.Reason = "stopped"
			}
		case j.Generation > readyGen && !routed(rec.Route, j.Name) && j.Name != rec.LatestReady:
			ri.Status = RevisionCreating
		default:
			ri.Status = RevisionReady
		}
		job, _, err := c.nomad.Jobs().Info(j.Name, c.qo(ctx, ns))
		if err != nil && !isNotFound(err) {
			return nil, c.nomadErr(err, "read-job", ns)
		}
		if err == nil && len(job.TaskGroups) > 0 && job.TaskGroups[0].Count != nil && !j.Stopped {
			ri.Desired = *job.TaskGroups[0].Count
		}
		es, _, err := c.consul.Health().Service(j.Name, "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, c.consulErr(err, "service:read", j.Name)
		}
		ri.Ready = len(es)
		out = append(out, ri)
	}
	return out, nil
}

// Describe returns everything about one service.
func (c *Client) Describe(ctx context.Context, ns, svc string) (*ServiceDetail, error) {
	rec, err := c.getService(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, &NotFoundError{Kind: "service", Name: svc, Namespace: ns}
	}
	jobs, err := c.revisionJobs(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	revs, err := c.revisionInfos(ctx, ns, rec, jobs)
	if err != nil {
		return nil, err
	}
	d := &ServiceDetail{ServiceSummary: c.summary(rec), Traffic: rec.Traffic, Tags: c.tagsOf(rec), Revisions: revs}
	d.Conditions = conditions(rec, revs)
	d.Ready = d.Conditions[len(d.Conditions)-1].Status
	return d, nil
}

// conditions are Knative's ConfigurationsReady, RoutesReady and Ready.
func conditions(rec *store.Service, revs []RevisionInfo) []Condition {
	byName := map[string]RevisionInfo{}
	for _, r := range revs {
		byName[r.Name] = r
	}
	cfg := Condition{Type: "ConfigurationsReady", Status: True}
	if rec.Latest != "" && rec.Latest != rec.LatestReady {
		switch r, ok := byName[rec.Latest]; {
		case ok && r.Status == RevisionFailed:
			cfg.Status, cfg.Reason = False, "RevisionFailed"
			cfg.Message = fmt.Sprintf("Revision %q failed: %s", r.Name, r.Reason)
		case ok:
			cfg.Status, cfg.Reason = Unknown, "RevisionCreating"
			cfg.Message = fmt.Sprintf("Revision %q is not ready yet", r.Name)
		default:
			cfg.Status, cfg.Reason = False, "RevisionMissing"
			cfg.Message = fmt.Sprintf("Revision %q has no Nomad job", rec.Latest)
		}
	}
	routes := Condition{Type: "RoutesReady", Status: True}
	if len(rec.Route) == 0 {
		routes.Status, routes.Reason, routes.Message = Unknown, "NoRoute", "No revision has become ready yet"
	}
	for _, r := range rec.Route {
		if ri, ok := byName[r.Revision]; !ok || ri.Status == RevisionFailed {
			routes.Status, routes.Reason = False, "RevisionMissing"
			routes.Message = fmt.Sprintf("Route sends %d%% to revision %q, which cannot serve", r.Percent, r.Revision)
			break
		}
	}
	ready := Condition{Type: "Ready", Status: True}
	for _, c := range []Condition{cfg, routes} {
		if c.Status == False || (c.Status == Unknown && ready.Status == True) {
			ready.Status, ready.Reason, ready.Message = c.Status, c.Reason, c.Message
		}
	}
	return []Condition{cfg, routes, ready}
}
