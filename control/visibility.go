package control

import (
	"context"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/jobspec"
)

// metaInternal is gateway.MetaInternal (control does not import the gateway).
const metaInternal = "internal"

// visibilityWarnings warns about an internal service when gateways run but none has an
// internal listener: the service is then served nowhere. No gateway registered, or a
// token that cannot read them: nothing to say.
func (c *Client) visibilityWarnings(ctx context.Context, s *jobspec.Spec) []string {
	if s.Visibility != store.VisibilityInternal {
		return nil
	}
	entries, _, err := c.consul.Health().Service(gauges.GatewayService, "", true, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil || len(entries) == 0 {
		return nil
	}
	for _, e := range entries {
		if e.Service.Meta[metaInternal] != "" {
			return nil
		}
	}
	return []string{"service " + s.Name + " is internal, and no gateway runs an internal listener (rouse gateway --internal-listen): it is served nowhere until one does"}
}
