package control

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rouse-run/rouse/jobspec"
)

// readinessOf reads what jobspec compiles: the check of each readiness type, and the
// protocol, which makes an http probe HTTP/2.
func TestReadinessOf(t *testing.T) {
	cases := []struct {
		name, body string
		want       readiness
	}{
		{"http1 default", ``, readiness{Type: "http", Path: "/"}},
		{"http1 path", `readiness { path = "/healthz" }`, readiness{Type: "http", Path: "/healthz"}},
		{"http1 tcp", `readiness { type = "tcp" }`, readiness{Type: "tcp"}},
		{"h2c default", `protocol = "h2c"`, readiness{Type: "tcp", H2C: true}},
		{"h2c http", "protocol = \"h2c\"\n  readiness {\n    type = \"http\"\n    path = \"/ready\"\n  }", readiness{Type: "http", Path: "/ready", H2C: true}},
		{"h2c grpc", "protocol = \"h2c\"\n  readiness { type = \"grpc\" }", readiness{Type: "grpc", H2C: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := "service \"r\" {\n  command = \"/bin/true\"\n  " + tc.body + "\n}\n"
			s, diags := jobspec.Parse(map[string][]byte{"service.hcl": []byte(src)}, nil)
			if diags.HasErrors() {
				t.Fatalf("spec: %s", diags.Error())
			}
			job, _, err := jobspec.Compile(s, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := readinessOf(job); got != tc.want {
				t.Errorf("readinessOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// healthStatus decodes HealthCheckResponse as protobuf does: a missing field is UNKNOWN,
// unknown fields are skipped, and a frame that is not one whole uncompressed message fails.
func TestHealthStatus(t *testing.T) {
	cases := []struct {
		b      []byte
		status uint64
		ok     bool
	}{
		{[]byte{0, 0, 0, 0, 2, 0x08, 0x01}, healthServing, true},
		{[]byte{0, 0, 0, 0, 2, 0x08, 0x02}, healthNotServing, true},
		{[]byte{0, 0, 0, 0, 0}, healthUnknown, true},
		{[]byte{0, 0, 0, 0, 5, 0x12, 0x01, 'x', 0x08, 0x01}, healthServing, true}, // field 2 skipped
		{[]byte{1, 0, 0, 0, 2, 0x08, 0x01}, 0, false},                             // compressed
		{[]byte{0, 0, 0, 0, 3, 0x08, 0x01}, 0, false},                             // short
		{[]byte{0, 0, 0, 0, 1, 0x08}, 0, false},                                   // varint cut off
		{[]byte{0, 0, 0}, 0, false},
	}
	for _, tc := range cases {
		if s, ok := healthStatus(tc.b); s != tc.status || ok != tc.ok {
			t.Errorf("healthStatus(% x) = %d, %v; want %d, %v", tc.b, s, ok, tc.status, tc.ok)
		}
	}
}

// The grpc probe against real servers: grpc-go's own health service (SERVING, NOT_SERVING,
// an unknown service, no health service at all), an HTTP/1.1-only server and a closed
// port, each with the reason apply's progress line shows.
func TestGRPCProbe(t *testing.T) {
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	addr := serve(t, srv)
	bare := serve(t, grpc.NewServer()) // no health service

	h1 := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = h1.Serve(l) }()
	t.Cleanup(func() { h1.Close() })

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	c := &Client{probe: http.DefaultClient}
	probe := func(addr, service string) (bool, string) {
		return c.probeOnce(context.Background(), addr, readiness{Type: "grpc", Service: service, H2C: true})
	}
	if ok, what := probe(addr, ""); !ok {
		t.Errorf("SERVING server: not ready: %s", what)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for _, tc := range []struct {
		addr, service, want string
	}{
		{addr, "", "grpc.health.v1.Health/Check " + addr + ": NOT_SERVING"},
		{addr, "nope", `(service "nope"): grpc-status 5: unknown service`},
		{bare, "", "grpc.health.v1.Health/Check " + bare + ": grpc-status 12: unknown service grpc.health.v1.Health"},
		{l.Addr().String(), "", "looked like an HTTP/1.1 header"}, // an HTTP/1.1 server
		{closedAddr, "", "connection refused"},
	} {
		ok, what := probe(tc.addr, tc.service)
		t.Logf("%s: %s", tc.addr, what)
		if ok || !strings.Contains(what, tc.want) {
			t.Errorf("probe %s %q = %v %q, want not ready, %q", tc.addr, tc.service, ok, what, tc.want)
		}
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if ok, what := probe(addr, ""); !ok {
		t.Errorf("SERVING again: not ready: %s", what)
	}

	// An h2c revision's http probe speaks HTTP/2 (grpc-go refuses HTTP/1.1): the server
	// answers, over h2c, 415 to a GET — not ready, but an answer, not a dropped connection.
	ok, what := c.probeOnce(context.Background(), addr, readiness{Type: "http", Path: "/", H2C: true})
	if ok || !strings.Contains(what, "GET (h2c) http://"+addr+"/: 415") {
		t.Errorf("h2c GET of a gRPC server = %v %q, want its 415", ok, what)
	}
}

func serve(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}
