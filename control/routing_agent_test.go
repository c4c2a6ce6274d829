package control

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/rouse-run/rouse/internal/gauges"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/jobspec"
)

// TestApplyRouting: visibility and tag_header_routing reach the service record in the
// route's write, a change of either is a route change (no new revision), traffic changes
// keep them, and list/describe show an internal service at its internal URL.
func TestApplyRouting(t *testing.T) {
	const svc = "routing"
	c := agentClient()
	spec := func(extra string) *jobspec.Spec {
		t.Helper()
		src := fmt.Sprintf(`service %q {
  command = "/bin/sh"
  args    = ["-c", "sleep 600"]
  resources {
    cpu    = 20
    memory = 16
  }
  autoscaling { initial = 0 }
%s
}
`, svc, extra)
		s, diags := jobspec.Parse(map[string][]byte{svc + ".hcl": []byte(src)}, nil)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return s
	}
	internal := spec("  visibility = \"internal\"\n  tag_header_routing = true")
	res := mustApply(t, c, internal)
	defer deleteService(t, svc)
	if res.Outcome != OutcomeCreated || res.URL != "http://routing.default.internal" {
		t.Fatalf("apply internal: %+v", res)
	}
	rev := res.Revision
	if rec := serviceRecord(t, svc); rec.Visibility != store.VisibilityInternal || !rec.TagHeader {
		t.Fatalf("record: visibility %q tag_header %v", rec.Visibility, rec.TagHeader)
	}
	if res := mustApply(t, c, internal); res.Outcome != OutcomeUnchanged {
		t.Fatalf("re-apply: %s", res.Outcome)
	}

	// A tag set by `rouse traffic` keeps the record's visibility; its URL is internal too.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr, err := c.SetTraffic(ctx, "default", svc, TrafficUpdate{Tags: []store.TrafficTarget{{Revision: rev, Tag: "blue"}}})
	if err != nil {
		t.Fatal(err)
	}
	if tr.URL != "http://routing.default.internal" || len(tr.Tags) != 1 || tr.Tags[0].URL != "http://blue-routing.default.internal" {
		t.Fatalf("traffic: %+v", tr)
	}
	if rec := serviceRecord(t, svc); rec.Visibility != store.VisibilityInternal || !rec.TagHeader {
		t.Fatalf("record after traffic: visibility %q tag_header %v", rec.Visibility, rec.TagHeader)
	}
	d, err := c.Describe(ctx, "default", svc)
	if err != nil {
		t.Fatal(err)
	}
	if d.URL != "http://routing.default.internal" || d.Visibility != store.VisibilityInternal || !d.TagHeaderRouting {
		t.Fatalf("describe: %+v", d.ServiceSummary)
	}
	list, err := c.List(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Name == svc && (s.URL != "http://routing.default.internal" || s.Visibility != store.VisibilityInternal) {
			t.Fatalf("list: %+v", s)
		}
	}

	// Public again, header routing off: the same revision, routed anew.
	res = mustApply(t, c, spec(""))
	if res.Outcome != OutcomeTraffic || res.Revision != rev || res.URL != "http://routing.default.localhost" {
		t.Fatalf("apply public: %+v", res)
	}
	if rec := serviceRecord(t, svc); rec.Visibility != "" || rec.TagHeader {
		t.Fatalf("record: visibility %q tag_header %v", rec.Visibility, rec.TagHeader)
	}
	// Only the visibility changes: still a route write, not "unchanged".
	res = mustApply(t, c, spec("  visibility = \"internal\""))
	if res.Outcome != OutcomeTraffic || res.Revision != rev {
		t.Fatalf("apply internal again: %+v", res)
	}
	if rec := serviceRecord(t, svc); rec.Visibility != store.VisibilityInternal || rec.TagHeader {
		t.Fatalf("record: visibility %q tag_header %v", rec.Visibility, rec.TagHeader)
	}

	// Gateways run but none has an internal listener: apply warns that the internal
	// service is served nowhere; once one has, it does not.
	agent := cluster.Consul.Agent()
	for _, meta := range []map[string]string{nil, {"internal": "10.0.0.5:8081"}} {
		reg := &consulapi.AgentServiceRegistration{ID: "routing-test-gw", Name: gauges.GatewayService, Port: 1, Meta: meta,
			Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing}}
		if err := agent.ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = agent.ServiceDeregister("routing-test-gw") }()
		res := mustApply(t, c, spec("  visibility = \"internal\"\n  env = { V = \""+fmt.Sprint(len(meta))+"\" }"))
		warned := strings.Contains(strings.Join(res.Warnings, "\n"), "no gateway runs an internal listener")
		if warned != (meta == nil) {
			t.Fatalf("gateway meta %v: warnings %q", meta, res.Warnings)
		}
	}
}
