// Package store keeps rouse's control-plane state in Consul KV: one record per service
// (latest spec, generation counter, declared traffic and the resolved route) and one
// immutable config per revision. Every write of a service record is a check-and-set on
// its ModifyIndex, so concurrent applies never lose an update. The scaler adds a failure
// record for a revision whose instances failed to start (failures.go). Every write also
// journals its key in the same transaction, so gateways read only what changed
// (journal.go).
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

// Prefix is the root of everything rouse keeps in Consul KV. The gateway lists it once,
// then follows JournalPrefix.
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

// Store reads and writes the records. Every write also journals the key (journal.go).
type Store struct {
	kv   *consulapi.KV
	tx   *consulapi.Txn
	opts Options
}

// New returns a Store over a Consul client, with the default journal settings.
func New(c *consulapi.Client) *Store { return NewWith(c, Options{}) }

// NewWith returns a Store with opts (tests step its clock and shorten the horizon).
func NewWith(c *consulapi.Client, opts Options) *Store {
	return &Store{kv: c.KV(), tx: c.Txn(), opts: opts.withDefaults()}
}

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
		err = s.write(ctx, ServiceKey(ns, name), &consulapi.KVTxnOp{Verb: consulapi.KVCAS, Value: b, Index: idx}, OpPut)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, errStale) {
			return nil, err
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
	return s.write(ctx, ServiceKey(ns, name), &consulapi.KVTxnOp{Verb: consulapi.KVDelete}, OpDelete)
}

// PutRevision writes a revision's config. Revisions are immutable; re-writing is harmless.
func (s *Store) PutRevision(ctx context.Context, c revmeta.Config) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return s.write(ctx, RevisionKey(c.Namespace, c.Revision), &consulapi.KVTxnOp{Verb: consulapi.KVSet, Value: b}, OpPut)
}

// DeleteRevision removes a revision's config.
func (s *Store) DeleteRevision(ctx context.Context, ns, rev string) error {
	return s.write(ctx, RevisionKey(ns, rev), &consulapi.KVTxnOp{Verb: consulapi.KVDelete}, OpDelete)
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
		rec, ok, err := DecodeRecord(p)
		switch {
		case !ok:
		case err != nil:
			errs = append(errs, err)
		default:
			rec.AddTo(&snap)
		}
	}
	return snap, errs
}

// Record is one decoded record of a Snapshot: exactly one field is set.
type Record struct {
	Service  *Service
	Revision *revmeta.Config
	Failure  *Failure
}

// AddTo puts the record into snap (whose maps must be made).
func (r Record) AddTo(snap *Snapshot) {
	switch {
	case r.Service != nil:
		snap.Services = append(snap.Services, r.Service)
	case r.Revision != nil:
		snap.Revisions[r.Revision.Namespace+"/"+r.Revision.Revision] = *r.Revision
	case r.Failure != nil:
		snap.Failures[r.Failure.Namespace+"/"+r.Failure.Revision] = *r.Failure
	}
}

// IsRecordKey says whether key holds a record of a Snapshot (a service record, a
// revision config or a failure record).
func IsRecordKey(key string) bool {
	return strings.HasPrefix(key, servicesPrefix) || strings.HasPrefix(key, revisionsPrefix) || strings.HasPrefix(key, failuresPrefix)
}

// DecodeRecord decodes one pair of a listing of Prefix; ok is false for a key that holds
// no record (the journal, the scaler's lock).
func DecodeRecord(p *consulapi.KVPair) (rec Record, ok bool, err error) {
	switch {
	case strings.HasPrefix(p.Key, servicesPrefix):
		rec.Service, err = decodeService(p)
	case strings.HasPrefix(p.Key, revisionsPrefix):
		var c revmeta.Config
		if err = json.Unmarshal(p.Value, &c); err != nil {
			err = fmt.Errorf("consul key %s: %w", p.Key, err)
		} else {
			rec.Revision = &c
		}
	case strings.HasPrefix(p.Key, failuresPrefix):
		var f Failure
		if f, err = decodeFailure(p); err == nil {
			rec.Failure = &f
		}
	default:
		return Record{}, false, nil
	}
	return rec, true, err
}
