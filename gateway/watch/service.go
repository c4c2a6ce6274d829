package watch

import (
	"context"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// FollowService watches one service with its own blocking query and hands each answer to
// apply, until apply returns true or ctx ends. The gateway follows a revision this way
// while it is waking, so a new instance reaches it in one round trip however many
// revisions the cluster holds (the all-services watch decodes every rouse check on each
// change: ~250 ms at 10 000 revisions). Bounded by the number of revisions waking at once.
func FollowService(ctx context.Context, c *consulapi.Client, log *zap.Logger, clk clock.Clock, name string, apply func(svc *Service, index uint64) (stop bool)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loop(ctx, "service "+name, log, clk, nil, func(ctx context.Context, idx uint64) (uint64, error) {
		entries, meta, err := c.Health().Service(name, "", false, (&consulapi.QueryOptions{WaitIndex: idx, WaitTime: 30 * time.Second}).WithContext(ctx))
		if err != nil {
			return 0, err
		}
		if apply(FromServiceEntries(name, entries), meta.LastIndex) {
			cancel()
		}
		return meta.LastIndex, nil
	})
}

// FromServiceEntries is the Service an answer of the health service endpoint describes
// (nil when it lists no instance).
func FromServiceEntries(name string, entries []*consulapi.ServiceEntry) *Service {
	var eps []Endpoint
	for _, e := range entries {
		if e.Service == nil || e.Node == nil || !slices.Contains(e.Service.Tags, revmeta.TagRouse) {
			continue
		}
		status, probe := consulapi.HealthPassing, probeOf(e.Service.Meta)
		for _, c := range e.Checks {
			status = worst(status, c.Status)
			if probe == "" && c.ServiceID != "" {
				probe = checkPath(c)
			}
		}
		ns := ""
		for _, t := range e.Service.Tags {
			if v, ok := strings.CutPrefix(t, revmeta.TagNamespacePrefix); ok {
				ns = v
			}
		}
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		eps = append(eps, Endpoint{ID: e.Node.Node + "/" + e.Service.ID, Addr: net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
			Status: status, ProbePath: probe, Namespace: ns})
	}
	if len(eps) == 0 {
		return nil
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].ID < eps[j].ID })
	return &Service{Name: name, Endpoints: eps}
}
