package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// GetRevision returns a revision's config, or nil when it has none.
func (s *Store) GetRevision(ctx context.Context, ns, rev string) (*revmeta.Config, error) {
	p, _, err := s.kv.Get(RevisionKey(ns, rev), (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read %s from consul: %w", RevisionKey(ns, rev), err)
	}
	if p == nil {
		return nil, nil
	}
	var c revmeta.Config
	if err := json.Unmarshal(p.Value, &c); err != nil {
		return nil, fmt.Errorf("consul key %s: %w", p.Key, err)
	}
	return &c, nil
}

// ListRevisions returns the revision configs of a namespace, sorted by service and
// generation. The control plane uses it to find configs whose job is gone.
func (s *Store) ListRevisions(ctx context.Context, ns string) ([]revmeta.Config, error) {
	prefix := revisionsPrefix + ns + "/"
	pairs, _, err := s.kv.List(prefix, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list %s from consul: %w", prefix, err)
	}
	out := make([]revmeta.Config, 0, len(pairs))
	for _, p := range pairs {
		var c revmeta.Config
		if err := json.Unmarshal(p.Value, &c); err != nil {
			return nil, fmt.Errorf("consul key %s: %w", p.Key, err)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Generation < out[j].Generation
	})
	return out, nil
}
