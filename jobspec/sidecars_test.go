package jobspec

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"
)

// TestBadSidecars asserts every error a bad sidecar block produces: summary and position.
func TestBadSidecars(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []want
	}{
		{
			name: "named like the main task, duplicate, invalid names",
			src: `service "a" {
  image = "x"
  sidecar "app" {
    command = "x"
  }
  sidecar "log" {
    command = "x"
  }
  sidecar "log" {
    command = "y"
  }
  sidecar "Log_Agent" {
    command = "x"
  }
  sidecar "" {
    command = "x"
  }
}
`,
			want: []want{
				{"Invalid sidecar name", "3:11"},
				{"Duplicate sidecar", "9:11"},
				{"Invalid sidecar name", "12:11"},
				{"Invalid sidecar name", "15:11"},
			},
		},
		{
			name: "both and neither image and command",
			src: `service "a" {
  image = "x"
  sidecar "both" {
    image   = "y"
    command = "z"
  }
  sidecar "neither" {
    args = ["-v"]
  }
}
`,
			want: []want{
				{"Conflicting image and command", "5:15"},
				{"Missing image or command", "7:3"},
			},
		},
		{
			name: "unknown lifecycle, driver mismatches, network",
			src: `service "a" {
  command = "x"
  sidecar "s1" {
    command   = "x"
    lifecycle = "poststop"
  }
  sidecar "s2" {
    image  = "y"
    driver = "exec"
  }
  sidecar "s3" {
    command = "x"
    driver  = "docker"
    network = "host"
  }
  sidecar "s4" {
    image   = "y"
    network = "none"
  }
  sidecar "s5" {
    command       = "x"
    resolve_image = false
  }
}
`,
			want: []want{
				{"Invalid sidecar.lifecycle", "5:17"},
				{"Invalid sidecar.driver", "9:14"},
				{"Invalid sidecar.driver", "13:15"},
				{"Unexpected network", "14:15"},
				{"Invalid sidecar.network", "18:15"},
				{"Unexpected resolve_image", "22:21"},
			},
		},
		{
			name: "resources out of bounds",
			src: `service "a" {
  command = "x"
  sidecar "s" {
    command = "x"
    resources {
      cpu        = 0
      memory     = 5
      memory_max = 20000000
    }
  }
  sidecar "t" {
    command = "x"
    resources {
      memory     = 64
      memory_max = 32
    }
    resources {
    }
  }
}
`,
			want: []want{
				{"Invalid sidecar.resources.cpu", "6:20"},
				{"Invalid sidecar.resources.memory", "7:20"},
				{"Invalid sidecar.resources.memory_max", "8:20"},
				{"Invalid sidecar.resources.memory_max", "15:20"},
				{"Duplicate resources block", "17:5"},
			},
		},
		{
			name: "bad image, empty command, env names, unknown argument, wrong types",
			src: `service "a" {
  command = "x"
  sidecar "s" {
    image = "UPPER/case:tag"
    env = {
      ROUSE_REVISION = "x"
      "1X"           = "y"
    }
    port = 9000
  }
  sidecar "t" {
    command = " "
    args    = "-v"
  }
}
`,
			want: []want{
				{"Invalid sidecar.image", "4:13"},
				{"Reserved environment variable", "6:7"},
				{"Invalid environment variable name", "7:7"},
				{"Unsupported argument", "9:5"},
				{"Invalid sidecar.command", "12:15"},
				{"Incorrect attribute value type", "13:15"},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, diags := parseOne(c.src, nil, nil)
			got := diagWants(diags, hcl.DiagError)
			if !sameWants(got, c.want) {
				t.Errorf("diagnostics:\n got %v\nwant %v\n%s", got, c.want, diagText(nil, diags))
			}
			if s != nil {
				t.Errorf("spec returned along with errors")
			}
		})
	}
}

// TestSidecarDiagnosticText: what a user sees for a sidecar named like the main task.
func TestSidecarDiagnosticText(t *testing.T) {
	src := []byte("service \"a\" {\n  image = \"x\"\n  sidecar \"app\" {\n    command = \"x\"\n  }\n}\n")
	lookup := func(string) (string, bool) { return "", false }
	_, files, diags := parse(map[string][]byte{"svc.hcl": src}, nil, lookup)
	text := diagText(files, diags)
	for _, want := range []string{"Error: Invalid sidecar name", "on svc.hcl line 3", `sidecar "app"`, "the main task"} {
		if !strings.Contains(text, want) {
			t.Errorf("diagnostic text lacks %q:\n%s", want, text)
		}
	}
}

// TestSidecarLifecycles: the mapping to Nomad's lifecycle, the defaults, and that the main
// task alone keeps the service and the port.
func TestSidecarLifecycles(t *testing.T) {
	s, diags := parseOne(`service "a" {
  image = "x"
  sidecar "init" {
    command   = "/bin/true"
    lifecycle = "prestart"
  }
  sidecar "beside" {
    image = "y"
  }
  sidecar "after" {
    command   = "/bin/sleep"
    driver    = "exec"
    lifecycle = "poststart"
  }
}
`, nil, nil)
	if diags.HasErrors() {
		t.Fatal(diagText(nil, diags))
	}
	job, _, err := Compile(s, 3)
	if err != nil {
		t.Fatal(err)
	}
	tasks := job.TaskGroups[0].Tasks
	if len(tasks) != 4 || tasks[0].Name != "app" {
		t.Fatalf("tasks %d, first %q", len(tasks), tasks[0].Name)
	}
	wantLC := map[string]nomadapi.TaskLifecycle{
		"init":   {Hook: "prestart", Sidecar: false},
		"beside": {Hook: "prestart", Sidecar: true},
		"after":  {Hook: "poststart", Sidecar: true},
	}
	for _, tk := range tasks[1:] {
		if tk.Lifecycle == nil || *tk.Lifecycle != wantLC[tk.Name] {
			t.Errorf("task %s lifecycle %+v, want %+v", tk.Name, tk.Lifecycle, wantLC[tk.Name])
		}
		if len(tk.Services) != 0 || tk.Env["PORT"] != "" || tk.Env["ROUSE_REVISION"] != "a-00003" {
			t.Errorf("task %s: services %d, env %v", tk.Name, len(tk.Services), tk.Env)
		}
		if *tk.Resources.CPU != defaultCPU || *tk.Resources.MemoryMB != defaultMemory {
			t.Errorf("task %s resources %d/%d", tk.Name, *tk.Resources.CPU, *tk.Resources.MemoryMB)
		}
	}
	if tasks[0].Lifecycle != nil || len(tasks[0].Services) != 1 {
		t.Errorf("main task: lifecycle %v, %d services", tasks[0].Lifecycle, len(tasks[0].Services))
	}
	if d := tasks[2].Driver; d != "docker" || tasks[3].Driver != "exec" || tasks[1].Driver != "raw_exec" {
		t.Errorf("drivers %s %s %s", tasks[1].Driver, d, tasks[3].Driver)
	}

	// A hand-built Spec that Parse would refuse fails to compile.
	bad := *s
	bad.Sidecars = append(bad.Sidecars[:0:0], s.Sidecars[0], s.Sidecars[0])
	if _, _, err := Compile(&bad, 1); err == nil || !strings.Contains(err.Error(), "declared twice") {
		t.Errorf("duplicate sidecar compiled: %v", err)
	}
	bad.Sidecars = []Sidecar{{Name: "app", Lifecycle: "sidecar", Driver: "raw_exec", Command: "x"}}
	if _, _, err := Compile(&bad, 1); err == nil {
		t.Error("sidecar named app compiled")
	}
}

// TestSidecarHash: adding sidecars is a new revision, no sidecar keeps the old hash, and a
// sidecar's resolved digest is part of the template.
func TestSidecarHash(t *testing.T) {
	base, diags := parseOne("service \"a\" {\n  image = \"x\"\n}\n", nil, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	with, diags := parseOne("service \"a\" {\n  image = \"x\"\n  sidecar \"s\" {\n    image = \"y:1\"\n  }\n}\n", nil, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if base.TemplateHash() == with.TemplateHash() {
		t.Error("a sidecar does not change the template hash")
	}
	// The hash of a spec without sidecars is what it was before sidecars existed.
	empty := *base
	empty.Sidecars = []Sidecar{}
	if empty.TemplateHash() != base.TemplateHash() {
		t.Error("an empty sidecar list changes the hash")
	}
	if !with.Sidecars[0].ResolveImage {
		t.Error("resolve_image does not default to true for a sidecar image")
	}
	pinned := *with
	pinned.Sidecars = []Sidecar{with.Sidecars[0]}
	pinned.Sidecars[0].ImageDigest = "sha256:" + strings.Repeat("a", 64)
	if pinned.TemplateHash() == with.TemplateHash() {
		t.Error("a sidecar's digest is not in the template hash")
	}
	job, _, err := Compile(&pinned, 1)
	if err != nil {
		t.Fatal(err)
	}
	if img, _ := job.TaskGroups[0].Tasks[1].Config["image"].(string); !strings.HasSuffix(img, "y@sha256:"+strings.Repeat("a", 64)) {
		t.Errorf("sidecar runs %v", img)
	}
}
