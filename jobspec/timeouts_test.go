package jobspec

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// TestTimeouts: response_start_timeout and idle_timeout reach the Spec and the revision's
// Config, and are absent (0) when not set.
func TestTimeouts(t *testing.T) {
	s, diags := parseOne("service \"a\" {\n  image = \"x\"\n  timeout = \"60s\"\n  response_start_timeout = \"10s\"\n  idle_timeout = \"1m\"\n}\n", nil, nil)
	if diags.HasErrors() {
		t.Fatal(diagText(nil, diags))
	}
	if s.ResponseStartTimeout != 10*time.Second || s.IdleTimeout != time.Minute {
		t.Fatalf("ResponseStartTimeout %v IdleTimeout %v, want 10s and 1m", s.ResponseStartTimeout, s.IdleTimeout)
	}
	job, cfg, err := Compile(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ResponseStartTimeout != 10*time.Second || cfg.IdleTimeout != time.Minute {
		t.Fatalf("Config: ResponseStartTimeout %v IdleTimeout %v, want 10s and 1m", cfg.ResponseStartTimeout, cfg.IdleTimeout)
	}
	if m := job.Meta; m[revmeta.KeyResponseStartTimeout] != "10s" || m[revmeta.KeyIdleTimeout] != "1m0s" {
		t.Fatalf("job meta %s=%q %s=%q, want 10s and 1m0s", revmeta.KeyResponseStartTimeout, m[revmeta.KeyResponseStartTimeout], revmeta.KeyIdleTimeout, m[revmeta.KeyIdleTimeout])
	}

	plain, diags := parseOne("service \"a\" {\n  image = \"x\"\n}\n", nil, nil)
	if diags.HasErrors() {
		t.Fatal(diagText(nil, diags))
	}
	zero, diags := parseOne("service \"a\" {\n  image = \"x\"\n  response_start_timeout = \"0s\"\n  idle_timeout = \"300s\"\n}\n", nil, nil)
	if diags.HasErrors() {
		t.Fatal(diagText(nil, diags))
	}
	if plain.ResponseStartTimeout != 0 || plain.IdleTimeout != 0 || zero.ResponseStartTimeout != 0 {
		t.Fatalf("unset: %v %v; \"0s\": %v, want 0", plain.ResponseStartTimeout, plain.IdleTimeout, zero.ResponseStartTimeout)
	}
	if zero.IdleTimeout != 300*time.Second {
		t.Fatalf("idle_timeout equal to the default timeout: %v, want 5m (allowed)", zero.IdleTimeout)
	}
	// "0s" is the same revision as no attribute (omitempty in the hash).
	zero.IdleTimeout = 0
	if plain.TemplateHash() != zero.TemplateHash() {
		t.Errorf("response_start_timeout = \"0s\" changed the template hash")
	}
}

func TestBadTimeouts(t *testing.T) {
	cases := []struct {
		name, src string
		want      []want
		text      string
	}{
		{
			name: "negative",
			src:  "service \"a\" {\n  image = \"x\"\n  response_start_timeout = \"-1s\"\n  idle_timeout = \"-5m\"\n}\n",
			want: []want{{"Invalid response_start_timeout", "3:28"}, {"Invalid idle_timeout", "4:18"}},
			text: "between 0s and 1h0m0s, not -1s",
		},
		{
			name: "longer than the default timeout",
			src:  "service \"a\" {\n  image = \"x\"\n  idle_timeout = \"10m\"\n}\n",
			want: []want{{"Invalid idle_timeout", "3:18"}},
			text: "idle_timeout (10m0s) is longer than the request timeout (5m0s)",
		},
		{
			name: "longer than timeout",
			src:  "service \"a\" {\n  image = \"x\"\n  timeout = \"30s\"\n  response_start_timeout = \"31s\"\n  idle_timeout = \"30s\"\n}\n",
			want: []want{{"Invalid response_start_timeout", "4:28"}},
			text: "response_start_timeout (31s) is longer than the request timeout (30s)",
		},
		{
			name: "not a duration",
			src:  "service \"a\" {\n  image = \"x\"\n  response_start_timeout = 10\n}\n",
			want: []want{{"Invalid response_start_timeout", "3:28"}},
			text: "is not a duration",
		},
		{
			name: "timeout refused: compared with nothing",
			src:  "service \"a\" {\n  image = \"x\"\n  timeout = \"2h\"\n  idle_timeout = \"40m\"\n}\n",
			want: []want{{"Invalid timeout", "3:13"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, diags := parseOne(c.src, nil, nil)
			if got := diagWants(diags, hcl.DiagError); !sameWants(got, c.want) {
				t.Errorf("diagnostics:\n got %v\nwant %v\n%s", got, c.want, diagText(nil, diags))
			}
			if s != nil {
				t.Errorf("spec returned along with errors")
			}
			if text := diagText(nil, diags); !strings.Contains(text, c.text) {
				t.Errorf("diagnostic text lacks %q:\n%s", c.text, text)
			}
		})
	}
}
