package jobspec

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// want is one expected diagnostic: its summary and where its subject starts.
type want struct {
	summary string
	at      string // "line:col" in f.hcl, or "" for no subject
}

func (w want) String() string { return w.summary + " @ " + w.at }

func diagWants(diags hcl.Diagnostics, sev hcl.DiagnosticSeverity) []want {
	var out []want
	for _, d := range diags {
		if d.Severity != sev {
			continue
		}
		w := want{summary: d.Summary}
		if d.Subject != nil {
			w.at = fmt.Sprintf("%d:%d", d.Subject.Start.Line, d.Subject.Start.Column)
			if d.Subject.Filename != "f.hcl" {
				w.at = d.Subject.Filename + ":" + w.at
			}
		}
		out = append(out, w)
	}
	return out
}

func sameWants(got, exp []want) bool {
	g, e := slices.Clone(got), slices.Clone(exp)
	cmp := func(a, b want) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(g, cmp)
	slices.SortFunc(e, cmp)
	return slices.Equal(g, e)
}

func parseOne(src string, vars map[string]string, env map[string]string) (*Spec, hcl.Diagnostics) {
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	s, _, diags := parse(map[string][]byte{"f.hcl": []byte(src)}, vars, lookup)
	return s, diags
}

// TestBadSpecs asserts every error a bad spec produces: summary and position, all at once.
func TestBadSpecs(t *testing.T) {
	cases := []struct {
		name string
		src  string
		vars map[string]string
		want []want
	}{
		{
			name: "syntax error stops early",
			src:  "service \"a\" {\n  image = \n}\n",
			want: []want{{"Invalid expression", "2:11"}},
		},
		{
			name: "no service block",
			src:  "variable \"x\" {\n  default = 1\n}\n",
			want: []want{{"Missing service block", "1:1"}},
		},
		{
			name: "two service blocks",
			src:  "service \"a\" {\n  command = \"x\"\n}\nservice \"b\" {\n  command = \"x\"\n}\n",
			want: []want{{"Duplicate service block", "4:1"}},
		},
		{
			name: "unknown attribute and block, several at once",
			src: `service "a" {
  image  = "x"
  imagee = "y"
  cpu    = 1
  health {
  }
}
`,
			want: []want{
				{"Unsupported argument", "3:3"},
				{"Unsupported argument", "4:3"},
				{"Unsupported block type", "5:3"},
			},
		},
		{
			name: "unknown attribute inside a block",
			src: `service "a" {
  image = "x"
  autoscaling {
    minimum = 1
  }
}
`,
			want: []want{{"Unsupported argument", "4:5"}},
		},
		{
			name: "wrong types",
			src: `service "a" {
  image       = ["x"]
  port        = "eighty"
  concurrency = true
  args        = "-v"
  env         = ["A"]
}
`,
			want: []want{
				{"Incorrect attribute value type", "2:17"},
				{"Incorrect attribute value type", "3:17"},
				{"Incorrect attribute value type", "4:17"},
				{"Incorrect attribute value type", "5:17"},
				{"Incorrect attribute value type", "6:17"},
			},
		},
		{
			name: "invalid names",
			src: `service "Hello_World" {
  namespace = "Prod"
  image     = "x"
  traffic {
    latest  = true
    percent = 100
    tag     = "-x"
  }
}
`,
			want: []want{
				{"Invalid service name", "1:9"},
				{"Invalid namespace", "2:15"},
				{"Invalid traffic.tag", "7:15"},
			},
		},
		{
			name: "name too long for a DNS label",
			src:  `service "` + strings.Repeat("a", 64) + `" { command = "x" }`,
			want: []want{{"Invalid service name", "1:9"}},
		},
		{
			name: "name too long for its revisions",
			src:  `service "` + strings.Repeat("a", 58) + `" { command = "x" }`,
			want: []want{{"Invalid service name", "1:9"}},
		},
		{
			name: "both image and command",
			src: `service "a" {
  image   = "x"
  command = "/bin/x"
}
`,
			want: []want{{"Conflicting image and command", "3:13"}},
		},
		{
			name: "neither image nor command",
			src:  "service \"a\" {\n  port = 80\n}\n",
			want: []want{{"Missing image or command", "1:1"}},
		},
		{
			name: "driver and port mismatches",
			src: `service "a" {
  command = "/bin/x"
  driver  = "docker"
  port    = 8080
}
`,
			want: []want{
				{"Invalid driver", "3:13"},
				{"Unexpected port", "4:13"},
			},
		},
		{
			name: "image with another driver, port out of range",
			src: `service "a" {
  image  = "x"
  driver = "raw_exec"
  port   = 70000
}
`,
			want: []want{
				{"Invalid driver", "3:12"},
				{"Invalid port", "4:12"},
			},
		},
		{
			name: "env names",
			src: `service "a" {
  image = "x"
  env = {
    PORT       = "1"
    "1BAD"     = "2"
    OK         = "3"
    "HAS-DASH" = "4"
  }
}
`,
			want: []want{
				{"Reserved environment variable", "4:5"},
				{"Invalid environment variable name", "5:5"},
				{"Invalid environment variable name", "7:5"},
			},
		},
		{
			name: "durations: negative, absurd, unparsable, too long",
			src: `service "a" {
  image   = "x"
  timeout = "3601s"
  readiness {
    interval = "-1s"
    timeout  = "soon"
  }
  autoscaling {
    window              = "1s"
    scale_to_zero_grace = "48h"
  }
}
`,
			want: []want{
				{"Invalid timeout", "3:13"},
				{"Invalid readiness.interval", "5:16"},
				{"Invalid readiness.timeout", "6:16"},
				{"Invalid autoscaling.window", "9:27"},
				{"Invalid autoscaling.scale_to_zero_grace", "10:27"},
			},
		},
		{
			name: "zero timeout",
			src:  "service \"a\" {\n  image = \"x\"\n  timeout = \"0s\"\n}\n",
			want: []want{{"Invalid timeout", "3:13"}},
		},
		{
			name: "timeout as a number",
			src:  "service \"a\" {\n  image = \"x\"\n  timeout = 30\n}\n",
			want: []want{{"Invalid timeout", "3:13"}},
		},
		{
			name: "min greater than max, initial greater than max",
			src: `service "a" {
  image = "x"
  autoscaling {
    min     = 5
    max     = 2
    initial = 3
  }
}
`,
			want: []want{
				{"Invalid autoscaling bounds", "4:15"},
				{"Invalid autoscaling bounds", "6:15"},
			},
		},
		{
			name: "autoscaling values out of Knative's bounds",
			src: `service "a" {
  image       = "x"
  concurrency = -1
  autoscaling {
    metric                        = "cpu"
    target                        = 0
    target_utilization_percentage = 101
    min                           = 1.5
    panic_window_percentage       = 0
    panic_threshold_percentage    = 100
    max_scale_up_rate             = 1
    max_scale_down_rate           = 0.5
    target_burst_capacity         = -2
  }
}
`,
			want: []want{
				{"Invalid concurrency", "3:17"},
				{"Invalid autoscaling.metric", "5:37"},
				{"Invalid autoscaling.target", "6:37"},
				{"Invalid autoscaling.target_utilization_percentage", "7:37"},
				{"Invalid autoscaling.min", "8:37"},
				{"Invalid autoscaling.panic_window_percentage", "9:37"},
				{"Invalid autoscaling.panic_threshold_percentage", "10:37"},
				{"Invalid autoscaling.max_scale_up_rate", "11:37"},
				{"Invalid autoscaling.max_scale_down_rate", "12:37"},
				{"Invalid autoscaling.target_burst_capacity", "13:37"},
			},
		},
		{
			name: "duplicate single blocks",
			src: `service "a" {
  image = "x"
  resources {
    cpu = 100
  }
  resources {
    cpu = 200
  }
}
`,
			want: []want{{"Duplicate resources block", "6:3"}},
		},
		{
			name: "resources out of range",
			src: `service "a" {
  image = "x"
  resources {
    cpu        = 0
    memory     = 5
    memory_max = 10
  }
}
`,
			want: []want{
				{"Invalid resources.cpu", "4:18"},
				{"Invalid resources.memory", "5:18"},
			},
		},
		{
			name: "percent not summing to 100",
			src: `service "a" {
  image = "x"
  traffic {
    revision = "a-00001"
    percent  = 50
  }
  traffic {
    latest  = true
    percent = 40
  }
}
`,
			want: []want{{"Traffic percentages do not sum to 100", "3:3"}},
		},
		{
			name: "duplicate tags",
			src: `service "a" {
  image = "x"
  traffic {
    revision = "a-00001"
    percent  = 50
    tag      = "blue"
  }
  traffic {
    latest  = true
    percent = 50
    tag     = "blue"
  }
}
`,
			want: []want{{"Duplicate traffic tag", "11:15"}},
		},
		{
			name: "traffic targets: both, neither, foreign revision, percent range",
			src: `service "a" {
  image = "x"
  traffic {
    revision = "a-00001"
    latest   = true
    percent  = 50
  }
  traffic {
    percent = 50
  }
  traffic {
    revision = "b-00001"
    percent  = 0
  }
  traffic {
    latest  = true
    percent = 101
  }
}
`,
			want: []want{
				{"Invalid traffic target", "4:16"},
				{"Invalid traffic target", "8:3"},
				{"Invalid traffic.revision", "12:16"},
				{"Invalid traffic.percent", "17:15"},
			},
		},
		{
			name: "revision_name not prefixed by the service",
			src:  "service \"a\" {\n  image = \"x\"\n  revision_name = \"blue\"\n}\n",
			want: []want{{"Invalid revision_name", "3:19"}},
		},
		{
			name: "constraints",
			src: `service "a" {
  image = "x"
  constraint {
    attribute = "${node.class}"
    operator  = "~"
    value     = "x"
  }
  constraint {
    value = "x"
  }
  constraint {
    attribute = "${attr.os.name}"
    operator  = "regexp"
    value     = "("
  }
}
`,
			want: []want{
				{"Invalid constraint.operator", "5:17"},
				{"Missing constraint attribute", "8:3"},
				{"Invalid constraint.value", "14:17"},
			},
		},
		{
			name: "readiness",
			src: `service "a" {
  image = "x"
  readiness {
    type = "grpc"
    path = "healthz"
  }
}
`,
			want: []want{
				{"Invalid readiness.type", "4:12"},
				{"Invalid readiness.path", "5:12"},
			},
		},
		{
			name: "unknown protocol",
			src:  "service \"a\" {\n  image    = \"x\"\n  protocol = \"h2\"\n}\n",
			want: []want{{"Invalid protocol", "3:14"}},
		},
		{
			name: "grpc readiness without h2c",
			src: `service "a" {
  image    = "x"
  protocol = "http1"
  readiness {
    type = "grpc"
  }
}
`,
			want: []want{{"Invalid readiness.type", "5:12"}},
		},
		{
			name: "grpc readiness with a path",
			src: `service "a" {
  image    = "x"
  protocol = "h2c"
  readiness {
    type = "grpc"
    path = "/healthz"
  }
}
`,
			want: []want{{"Invalid readiness.path", "6:12"}},
		},
		{
			name: "path with h2c's default tcp readiness",
			src: `service "a" {
  image    = "x"
  protocol = "h2c"
  readiness {
    path = "/healthz"
  }
}
`,
			want: []want{{"Invalid readiness.path", "5:12"}},
		},
		{
			name: "undefined references and functions",
			src: `service "a" {
  image   = vars.image
  args    = [nope("x")]
  timeout = var.timeout
}
`,
			want: []want{
				{"Unknown variable", "2:13"},
				{"Call to unknown function", "3:14"},
				{"Undeclared variable", "4:13"},
			},
		},
		{
			name: "unset variable, undeclared -var, bad -var value",
			src: `variable "image" {
}
variable "port" {
  type = number
}
service "a" {
  image = var.image
  port  = var.port
}
`,
			vars: map[string]string{"port": "eighty", "typo": "1"},
			want: []want{
				{"Unset variable", "1:1"},
				{"Undeclared variable", ""},
				{"Invalid value for variable", "4:10"},
			},
		},
		{
			name: "variable validation and bad default",
			src: `variable "replicas" {
  type    = number
  default = 0
  validation {
    condition     = var.replicas > 0
    error_message = "Need a replica."
  }
}
variable "tags" {
  type    = list(string)
  default = "x"
}
service "a" {
  image = "x"
}
`,
			want: []want{
				{"Invalid value for variable", "5:21"},
				{"Invalid default value for variable", "11:13"},
			},
		},
		{
			name: "duplicate variable and locals",
			src: `variable "x" {
  default = 1
}
variable "x" {
  default = 2
}
locals {
  a = local.b
  b = local.a
  c = 1
}
locals {
  c = 2
}
service "a" {
  image = "x"
}
`,
			want: []want{
				{"Duplicate variable", "4:10"},
				{"Circular reference in locals", "8:3"},
				{"Circular reference in locals", "9:3"},
				{"Duplicate local value", "13:3"},
			},
		},
		{
			name: "null elements",
			src: `service "a" {
  image = "x"
  args  = ["a", null]
  env   = { A = null }
}
`,
			want: []want{
				{"Invalid args", "3:11"},
				{"Invalid env", "4:11"},
			},
		},
		{
			name: "non-finite numbers",
			src: `service "a" {
  image = "x"
  autoscaling {
    target = pow(10, 400)
    max    = 1e400
  }
}
`,
			want: []want{
				{"Invalid autoscaling.target", "4:14"},
				{"Invalid autoscaling.max", "5:14"},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, diags := parseOne(c.src, c.vars, nil)
			got := diagWants(diags, hcl.DiagError)
			if !sameWants(got, c.want) {
				t.Errorf("diagnostics:\n got %v\nwant %v\n%s", got, c.want, diagText(nil, diags))
			}
			if s != nil {
				t.Errorf("spec returned along with errors")
			}
			for _, d := range diags {
				if d.Subject != nil && d.Subject.Filename == "f.hcl" && (d.Subject.Start.Line < 1 || d.Subject.Start.Column < 1) {
					t.Errorf("diagnostic %q has no position: %v", d.Summary, d.Subject)
				}
			}
		})
	}
}

// TestBadSpecDiagnosticText checks what a user sees: file:line:col, the field, a snippet.
func TestBadSpecDiagnosticText(t *testing.T) {
	src := []byte("service \"a\" {\n  image   = \"x\"\n  timeout = \"2h\"\n}\n")
	lookup := func(string) (string, bool) { return "", false }
	_, files, diags := parse(map[string][]byte{"svc.hcl": src}, nil, lookup)
	text := diagText(files, diags)
	for _, want := range []string{"Error: Invalid timeout", "on svc.hcl line 3", `timeout = "2h"`, "between 1s and 1h0m0s"} {
		if !strings.Contains(text, want) {
			t.Errorf("diagnostic text lacks %q:\n%s", want, text)
		}
	}
}

func TestWarningTargetAboveConcurrency(t *testing.T) {
	s, diags := parseOne(`service "a" {
  image       = "x"
  concurrency = 10
  autoscaling {
    target = 50
  }
}
`, nil, nil)
	if diags.HasErrors() {
		t.Fatal(diagText(nil, diags))
	}
	got := diagWants(diags, hcl.DiagWarning)
	if !sameWants(got, []want{{"Autoscaling target above concurrency", "5:14"}}) {
		t.Fatalf("warnings %v", got)
	}
	if s.Autoscaling.Target != 10 {
		t.Fatalf("target %v, want clamped to 10", s.Autoscaling.Target)
	}
}
