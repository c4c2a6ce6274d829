// Package store keeps rouse's control-plane state in Consul KV: one record per service
// (latest spec, generation counter, declared traffic and the resolved route) and one
// immutable config per revision. Every write of a service record is a check-and-set on
// its ModifyIndex, so concurrent applies never lose an update. The scaler adds a failure
// record for a revision whose instances failed to start (failures.go).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// Prefix is the root of everything rouse keeps in Consul KV. The gateway watches it with
// one blocking query.
const Prefix = "rouse/"

const (
	servicesPrefix  = Prefix + "services/"
	revisionsPrefix = Prefix + "revisions/"
)

// ServiceKey is the KV key of a service record.
func ServiceKey(ns, name string) string { return servicesPrefix + ns + "/" + name }

// RevisionKey is the KV key of a revision's config.
func RevisionKey(ns, rev string) string { return revisionsPrefix + ns + "/" + rev }

// TrafficTarget is one traffic entry as the user declared it.
type TrafficTarget struct {
	Revision string `json:"revision,omitempty"`
	Latest   bool   `json:"latest,omitempty"`
	Percent  int    `json:"percent"`
	Tag      string `json:"tag,omitempty"`
}

// RouteTarget is one resolved entry: always a concrete revision.
type RouteTarget struct {
	Revision string `json:"revision"`
	Percent  int    `json:"percent"`
	Tag      string `json:"tag,omitempty"`
}

// VisibilityInternal is Service.Visibility for a service served only on the gateways'
// internal listener.
const VisibilityInternal = "internal"

// Service is the record at ServiceKey.
type Service struct {
	Namespace   string          `json:"namespace"`
	Name        string          `json:"name"`
	Generation  int             `json:"generation"`   // last generation handed out
	Latest      string          `json:"latest"`       // newest revision created (ready or not)
	LatestReady string          `json:"latest_ready"` // newest revision that became ready
	SpecHash    string          `json:"spec_hash"`    // template hash of LatestReady
	Spec        string          `json:"spec"`         // HCL source of the last successful apply
	Traffic     []TrafficTarget `json:"traffic"`      // declared
	Route       []RouteTarget   `json:"route"`        // resolved; what the gateway serves
	// Visibility is "" (public: served on the gateway's public listener) or "internal"
	// (only on its internal listener, under the internal domain: Knative's cluster-local).
	Visibility string `json:"visibility,omitempty"`
	// TagHeader: a request on the service's main host with a Rouse-Tag header naming a tag
	// goes to that tag's revision (Knative's tag-header-based-routing).
	TagHeader bool      `json:"tag_header,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`

	modifyIndex uint64
}

// ModifyIndex is the Consul index the record was read at (0 for a new record).
func (s *Service) ModifyIndex() uint64 { return s.modifyIndex }

// Resolve turns declared traffic into a route: `latest` becomes LatestReady. Entries with the
// same revision and no tag are merged. An error names the entry that cannot be resolved.
func Resolve(traffic []TrafficTarget, latestReady string) ([]RouteTarget, error) {
	out := make([]RouteTarget, 0, len(traffic))
	for i, t := range traffic {
		rev := t.Revision
		if t.Latest {
			if latestReady == "" {
				return nil, fmt.Errorf("traffic[%d]: latest = true but the service has no ready revision yet", i)
			}
			rev = latestReady
		}
		if rev == "" {
			return nil, fmt.Errorf("traffic[%d]: neither revision nor latest is set", i)
		}
		out = append(out, RouteTarget{Revision: rev, Percent: t.Percent, Tag: t.Tag})
	}
	return out, nil
}

// ErrConflict is returned when a CAS write lost the race more times than retried.
var errConflict = errors.New("service record changed concurrently too many times")

// Store reads and writes the records.
type Store struct{ kv *consulapi.KV }

// New returns a Store over a Consul client.
func New(c *consulapi.Client) *Store { return &Store{kv: c.KV()} }

// GetService returns the record, or nil if the service does not exist.
func (s *Store) GetService(ctx context.Context, ns, name string) (*Service, error) {
	p, _, err := s.kv.Get(ServiceKey(ns, name), (&consulapi.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read %s from consul: %w", ServiceKey(ns, name), err)
	}
	if p == nil {
		return nil, nil
	}
	return decodeService(p)
}

func decodeService(p *consulapi.KVPair) (*Service, error) {
	var svc Service
	if err := json.Unmarshal(p.Value, &svc); err != nil {
		return nil, fmt.Errorf("consul key %s: %w", p.Key, err)
	}
	svc.modifyIndex = p.ModifyIndex
	return &svc, nil
}

// ListServices returns every service record in the namespace ("" = all), sorted by name.
func (s *Store) ListServices(ctx context.Context, ns string) ([]*Service, error) {
	prefix := servicesPrefix
	if ns != "" {
		prefix += ns + "/"
	}
	pairs, _, err := s.kv.List(prefix, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list %s from consul: %w", prefix, err)
	}
	out := make([]*Service, 0, len(pairs))
	for _, p := range pairs {
		svc, err := decodeService(p)
		if err != nil {
			return nil, err
		}
		out = append(out, svc)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// UpdateService applies fn to the current record (nil when absent) and writes the result
// with check-and-set, re-reading and re-applying fn when another writer got there first.
// fn must be a pure function of its input: it may run several times.
func (s *Store) UpdateService(ctx context.Context, ns, name string, fn func(cur *Service) (*Service, error)) (*Service, error) {
	for attempt := 0; attempt < 50; attempt++ {
		cur, err := s.GetService(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		var idx uint64
		var in *Service
		if cur != nil {
			idx = cur.modifyIndex
			cp := *cur
			cp.Traffic = append([]TrafficTarget(nil), cur.Traffic...)
			cp.Route = append([]RouteTarget(nil), cur.Route...)
			in = &cp
		}
		next, err := fn(in)
		if err != nil {
			return nil, err
		}
		next.Namespace, next.Name = ns, name
		b, err := json.Marshal(next)
		if err != nil {
			return nil, err
		}
		ok, _, err := s.kv.CAS(&consulapi.KVPair{Key: ServiceKey(ns, name), Value: b, ModifyIndex: idx}, (&consulapi.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("write %s to consul: %w", ServiceKey(ns, name), err)
		}
		if ok {
			return next, nil
		}
		select { // lost the race: back off a little so N writers do not spin in lockstep
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
	return nil, errConflict
}

// DeleteService removes the record (and so the route: the gateway stops serving the host).
func (s *Store) DeleteService(ctx context.Context, ns, name string) error {
	if _, err := s.kv.Delete(ServiceKey(ns, name), (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete %s from consul: %w", ServiceKey(ns, name), err)
	}
	return nil
}

// PutRevision writes a revision's config. Revisions are immutable; re-writing is harmless.
func (s *Store) PutRevision(ctx context.Context, c revmeta.Config) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(&consulapi.KVPair{Key: RevisionKey(c.Namespace, c.Revision), Value: b}, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("write %s to consul: %w", RevisionKey(c.Namespace, c.Revision), err)
	}
	return nil
}

// DeleteRevision removes a revision's config.
func (s *Store) DeleteRevision(ctx context.Context, ns, rev string) error {
	if _, err := s.kv.Delete(RevisionKey(ns, rev), (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete %s from consul: %w", RevisionKey(ns, rev), err)
	}
	return nil
}

// Snapshot is everything under Prefix, decoded: what the gateway builds its table from.
type Snapshot struct {
	Services  []*Service
	Revisions map[string]revmeta.Config // by "<ns>/<revision>"
	Failures  map[string]Failure        // by "<ns>/<revision>": revisions whose instances failed to start
}

// Decode turns a listing of Prefix into a Snapshot. A record that does not decode is
// reported in errs and left out, so one bad key never takes every route down.
func Decode(pairs consulapi.KVPairs) (snap Snapshot, errs []error) {
	snap.Revisions = map[string]revmeta.Config{}
	snap.Failures = map[string]Failure{}
	for _, p := range pairs {
		switch {
		case strings.HasPrefix(p.Key, servicesPrefix):
			svc, err := decodeService(p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			snap.Services = append(snap.Services, svc)
		case strings.HasPrefix(p.Key, revisionsPrefix):
			var c revmeta.Config
			if err := json.Unmarshal(p.Value, &c); err != nil {
				errs = append(errs, fmt.Errorf("consul key %s: %w", p.Key, err))
				continue
			}
			snap.Revisions[c.Namespace+"/"+c.Revision] = c
		case strings.HasPrefix(p.Key, failuresPrefix):
			f, err := decodeFailure(p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			snap.Failures[f.Namespace+"/"+f.Revision] = f
		}
	}
	return snap, errs
}
