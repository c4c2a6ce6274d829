package jobspec

import (
	"strings"
	"testing"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// TestProtocol: protocol = "h2c" reaches the revision config and its job meta, makes the
// readiness default tcp, and allows an explicit http check; the default, http1, changes
// neither the hash nor the meta of existing specs.
func TestProtocol(t *testing.T) {
	withProtocol := func(p string) string {
		return strings.Replace(hashBase, `image = "x:1"`, "image = \"x:1\"\n  protocol = \""+p+"\"", 1)
	}
	base := mustParse(t, hashBase, nil, nil)
	http1 := mustParse(t, withProtocol("http1"), nil, nil)
	h2c := mustParse(t, withProtocol("h2c"), nil, nil)
	if base.Protocol != revmeta.ProtocolHTTP1 || http1.Protocol != revmeta.ProtocolHTTP1 || h2c.Protocol != revmeta.ProtocolH2C {
		t.Fatalf("protocols %q %q %q", base.Protocol, http1.Protocol, h2c.Protocol)
	}
	if http1.TemplateHash() != base.TemplateHash() {
		t.Error(`protocol = "http1" changed the hash: every revision would roll on upgrade`)
	}
	unset := *base
	unset.Protocol = ""
	if unset.TemplateHash() != base.TemplateHash() {
		t.Error("a hand-built Spec without protocol hashes differently from http1")
	}
	if h2c.TemplateHash() == base.TemplateHash() {
		t.Error("h2c does not change the hash")
	}
	if h2c.Readiness != (Readiness{Type: "tcp", Interval: base.Readiness.Interval, Timeout: base.Readiness.Timeout}) {
		t.Errorf("h2c default readiness %+v, want tcp", h2c.Readiness)
	}

	job, cfg, err := Compile(base, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := job.Meta[revmeta.KeyProtocol]; ok || cfg.Protocol != "" || cfg.H2C() {
		t.Errorf("http1: meta %v, config protocol %q", job.Meta, cfg.Protocol)
	}
	job, cfg, err = Compile(h2c, 1)
	if err != nil {
		t.Fatal(err)
	}
	if job.Meta[revmeta.KeyProtocol] != revmeta.ProtocolH2C || !cfg.H2C() {
		t.Errorf("h2c: meta %s = %q, config protocol %q", revmeta.KeyProtocol, job.Meta[revmeta.KeyProtocol], cfg.Protocol)
	}
	if back, err := revmeta.FromMeta(job.Meta); err != nil || back != cfg {
		t.Errorf("job meta does not round-trip to the config: %v\n%+v\n%+v", err, back, cfg)
	}
	svc := job.TaskGroups[0].Tasks[0].Services[0]
	if c := svc.Checks[0]; c.Type != "tcp" || c.Path != "" || svc.Meta != nil {
		t.Errorf("h2c default check %+v, service meta %v", c, svc.Meta)
	}

	// An explicit http check is allowed with h2c (Go's h2c handler serves HTTP/1.1 too).
	src := strings.Replace(withProtocol("h2c"), "  traffic {", "  readiness {\n    type = \"http\"\n  }\n  traffic {", 1)
	s := mustParse(t, src, nil, nil)
	if s.Readiness.Type != "http" || s.Readiness.Path != "/" {
		t.Errorf("h2c with type = http: %+v", s.Readiness)
	}
	src = strings.Replace(withProtocol("h2c"), "  traffic {", "  readiness {\n    type = \"http\"\n    path = \"/ready\"\n  }\n  traffic {", 1)
	if s := mustParse(t, src, nil, nil); s.Readiness.Path != "/ready" {
		t.Errorf("h2c with an http path: %+v", s.Readiness)
	}
}

// TestGRPCReadiness: a grpc readiness compiles to Nomad's grpc check in plain text and
// marks the service for the gateway's probe instead of a path; it is part of the hash.
func TestGRPCReadiness(t *testing.T) {
	src := `service "g" {
  image    = "x:1"
  protocol = "h2c"
  readiness {
    type = "grpc"
  }
}
`
	s := mustParse(t, src, nil, nil)
	if s.Readiness.Type != "grpc" || s.Readiness.Path != "" {
		t.Fatalf("readiness %+v", s.Readiness)
	}
	tcp := mustParse(t, strings.Replace(src, `"grpc"`, `"tcp"`, 1), nil, nil)
	if s.TemplateHash() == tcp.TemplateHash() {
		t.Error("readiness type grpc does not change the hash")
	}
	job, _, err := Compile(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	svc := job.TaskGroups[0].Tasks[0].Services[0]
	if c := svc.Checks[0]; c.Type != "grpc" || c.GRPCUseTLS || c.GRPCService != "" || c.Path != "" {
		t.Errorf("check %+v", c)
	}
	if len(svc.Meta) != 1 || svc.Meta[revmeta.MetaReadinessGRPC] != "true" {
		t.Errorf("service meta %v, want only %s=true", svc.Meta, revmeta.MetaReadinessGRPC)
	}

	// What the messages say.
	for src, want := range map[string]string{
		strings.Replace(src, `"h2c"`, `"h3"`, 1):                                       `or "h2c" (HTTP/2 without TLS`,
		strings.Replace(src, "  protocol = \"h2c\"\n", "", 1):                          `needs protocol = "h2c"`,
		strings.Replace(src, `type = "grpc"`, "type = \"grpc\"\n    path = \"/x\"", 1): "grpc.health.v1.Health/Check",
		strings.Replace(src, `type = "grpc"`, `path = "/x"`, 1):                        `defaults to "tcp"`,
	} {
		_, diags := parseOne(src, nil, nil)
		if !diags.HasErrors() || !strings.Contains(diagText(nil, diags), want) {
			t.Errorf("%q: %s, want an error with %q", src, diagText(nil, diags), want)
		}
	}

	// Hand-built Specs that Parse never makes.
	for name, mod := range map[string]func(*Spec){
		"grpc without h2c": func(s *Spec) { s.Protocol = revmeta.ProtocolHTTP1 },
		"grpc with a path": func(s *Spec) { s.Readiness.Path = "/" },
		"unknown protocol": func(s *Spec) { s.Protocol = "h3" },
	} {
		bad := *s
		mod(&bad)
		if _, _, err := Compile(&bad, 1); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}
