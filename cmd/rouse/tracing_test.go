package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// otlpCollector is an OTLP/HTTP endpoint (POST /v1/traces, protobuf) that keeps every
// span it is sent with its resource's service.name.
type otlpCollector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	names []string // service.name of each span's resource
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces application/x-protobuf", http.StatusBadRequest)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		name := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				name = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, s)
				c.names = append(c.names, name)
			}
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// TestGatewayTracesToOTLP: `rouse gateway --otlp-endpoint` sends its spans to a real
// OTLP/HTTP endpoint: the gateway span of a request that brought a traceparent is in the
// client's trace, names the revision and the status, and comes from service
// rouse-gateway; the instance is told the gateway's span. A bad endpoint is a usage error.
func TestGatewayTracesToOTLP(t *testing.T) {
	bin, _ := bins(t)
	col := &otlpCollector{}
	cs := httptest.NewServer(col)
	defer cs.Close()
	var mu sync.Mutex
	var seen string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Get("Traceparent")
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	defer be.Close()
	const svc, rev = "otlp", "otlp-00001"
	st := store.New(cluster.Consul)
	ctx := context.Background()
	if err := st.PutRevision(ctx, revmeta.Defaults("default", svc, rev)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateService(ctx, "default", svc, func(cur *store.Service) (*store.Service, error) {
		if cur == nil {
			cur = &store.Service{Namespace: "default", Name: svc}
		}
		cur.Route = []store.RouteTarget{{Revision: rev, Percent: 100}}
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	bePort := be.Listener.Addr().(*net.TCPAddr).Port
	agent := cluster.Consul.Agent()
	if err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{ID: "otlp-1", Name: rev, Address: "127.0.0.1", Port: bePort,
		Tags:  []string{revmeta.TagRouse, revmeta.TagServicePrefix + svc},
		Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.ServiceDeregister("otlp-1")
		_ = st.DeleteService(ctx, "default", svc)
		_ = st.DeleteRevision(ctx, "default", rev)
	})

	ports, err := agents.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	pub, adm := fmt.Sprint("127.0.0.1:", ports[0]), fmt.Sprint("127.0.0.1:", ports[1])
	startGatewayCmd(t, bin, "--listen", pub, "--admin-listen", adm, "--id", "otlp", "--register=false",
		"--access-log=false", "--otlp-endpoint", cs.URL, "--trace-sample-ratio", "1")
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	poll.Until(t, 30*time.Second, "an answer through the traced gateway", func() error {
		req, _ := http.NewRequest("GET", "http://"+pub+"/traced", nil)
		req.Host = svc + ".default.localhost"
		req.Header.Set("Traceparent", "00-"+tid+"-"+sid+"-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	var span *tracepb.Span
	var service string
	poll.Until(t, 15*time.Second, "the gateway span at the OTLP endpoint", func() error {
		col.mu.Lock()
		defer col.mu.Unlock()
		for i, s := range col.spans {
			if s.Name == "rouse.gateway" && fmt.Sprintf("%x", s.TraceId) == tid {
				span, service = s, col.names[i]
				return nil
			}
		}
		return fmt.Errorf("%d spans, none of trace %s", len(col.spans), tid)
	})
	attrs := map[string]string{}
	for _, a := range span.Attributes {
		v := a.GetValue()
		if attrs[a.Key] = v.GetStringValue(); attrs[a.Key] == "" {
			attrs[a.Key] = fmt.Sprint(v.GetIntValue())
		}
	}
	if fmt.Sprintf("%x", span.ParentSpanId) != sid || service != "rouse-gateway" || span.Kind != tracepb.Span_SPAN_KIND_SERVER ||
		attrs["rouse.revision"] != rev || attrs["http.response.status_code"] != "200" {
		t.Errorf("span parent %x, service %q, kind %v, attributes %v", span.ParentSpanId, service, span.Kind, attrs)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := fmt.Sprintf("00-%s-%x-01", tid, span.SpanId); seen != want {
		t.Errorf("the instance got traceparent %q, want %q", seen, want)
	}

	bad := exec.Command(bin, "gateway", "--otlp-endpoint", "ftp://x")
	bad.Env = append([]string{"PATH=" + os.Getenv("PATH")}, cluster.Env()...)
	b, err := bad.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(b), "--otlp-endpoint") {
		t.Errorf("a bad endpoint: %v\n%s", err, b)
	}
}
