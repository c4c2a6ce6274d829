package jobspec

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// TestGuard: a hard limit adds the rouse-guard task, its port and its node constraint, and
// points the Consul service (not its check) at the guard, whatever the driver, network,
// protocol and sidecars; without one the job has none of it.
func TestGuard(t *testing.T) {
	const body = `
  concurrency = 4
  timeout     = "90s"
`
	specs := map[string]string{
		"raw_exec":    `service "g" {` + "\n  command = \"/bin/app\"" + body + "}\n",
		"exec":        `service "g" {` + "\n  command = \"/bin/app\"\n  driver = \"exec\"" + body + "}\n",
		"docker":      `service "g" {` + "\n  image = \"x:1\"\n  port = 9000" + body + "}\n",
		"docker-host": `service "g" {` + "\n  image = \"x:1\"\n  network = \"host\"" + body + "}\n",
		"h2c-grpc": `service "g" {` + "\n  image = \"x:1\"\n  protocol = \"h2c\"" + body +
			"  readiness {\n    type = \"grpc\"\n  }\n}\n",
		"sidecars": `service "g" {` + "\n  image = \"x:1\"" + body +
			"  sidecar \"init\" {\n    command = \"/bin/true\"\n    lifecycle = \"prestart\"\n  }\n" +
			"  sidecar \"proxy\" {\n    image = \"p:1\"\n  }\n}\n",
		"user-constraint": `service "g" {` + "\n  command = \"/bin/app\"" + body +
			"  constraint {\n    attribute = \"${node.class}\"\n    value = \"edge\"\n  }\n}\n",
	}
	for name, src := range specs {
		t.Run(name, func(t *testing.T) {
			s := mustParse(t, src, nil, nil)
			job, cfg, err := Compile(s, 1)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Concurrency != 4 {
				t.Fatalf("config concurrency %d", cfg.Concurrency)
			}
			group := job.TaskGroups[0]
			main := group.Tasks[0]

			// 1. The guard's dynamic port beside the app's, which is unchanged.
			ports := group.Networks[0].DynamicPorts
			if len(ports) != 2 || ports[0].Label != revmeta.PortLabel || ports[1] != (nomadapi.Port{Label: revmeta.GuardPortLabel}) {
				t.Errorf("dynamic ports %+v, want http then guard (no To)", ports)
			}

			// 2. The guard task, after the main task and the sidecars.
			if n := len(group.Tasks); n != 2+len(s.Sidecars) {
				t.Fatalf("%d tasks, want the main task, %d sidecars and the guard", n, len(s.Sidecars))
			}
			for i, sc := range s.Sidecars {
				if group.Tasks[1+i].Name != sc.Name {
					t.Errorf("task %d is %s, want sidecar %s", 1+i, group.Tasks[1+i].Name, sc.Name)
				}
			}
			g := group.Tasks[len(group.Tasks)-1]
			if g.Name != "rouse-guard" || g.Driver != "raw_exec" {
				t.Errorf("guard task %q driver %q", g.Name, g.Driver)
			}
			args := []string{"guard", "--listen", "${NOMAD_ADDR_guard}", "--upstream", "${NOMAD_HOST_ADDR_http}",
				"--concurrency", "4", "--timeout", "1m30s"}
			if s.Protocol == "h2c" {
				args = append(args, "--h2c") // the app speaks h2c
			}
			wantConfig := map[string]any{"command": "${meta.rouse_bin}", "args": args}
			if !reflect.DeepEqual(g.Config, wantConfig) {
				t.Errorf("guard config %#v\nwant %#v", g.Config, wantConfig)
			}
			if g.Lifecycle == nil || *g.Lifecycle != (nomadapi.TaskLifecycle{Hook: "prestart", Sidecar: true}) {
				t.Errorf("guard lifecycle %+v, want prestart sidecar", g.Lifecycle)
			}
			if r := g.Resources; r == nil || r.CPU == nil || *r.CPU != 50 || r.MemoryMB == nil || *r.MemoryMB != 32 || r.MemoryMaxMB != nil {
				t.Errorf("guard resources %+v", g.Resources)
			}
			if g.KillTimeout == nil || *g.KillTimeout != 90*time.Second {
				t.Errorf("guard kill_timeout %v, want the revision timeout", g.KillTimeout)
			}
			if g.ShutdownDelay != ShutdownDelay || g.ShutdownDelay != main.ShutdownDelay {
				t.Errorf("guard shutdown_delay %s, want the main task's %s", g.ShutdownDelay, main.ShutdownDelay)
			}
			if len(g.Services) != 0 || len(g.Env) != 0 || len(g.Templates) != 0 || len(g.VolumeMounts) != 0 {
				t.Errorf("guard has services %v, env %v, templates %v, mounts %v", g.Services, g.Env, g.Templates, g.VolumeMounts)
			}

			// 3. The service at the guard's port, its check at the app's.
			if len(main.Services) != 1 {
				t.Fatalf("main task services %v", main.Services)
			}
			svc := main.Services[0]
			if svc.PortLabel != revmeta.GuardPortLabel {
				t.Errorf("service port %q, want %q", svc.PortLabel, revmeta.GuardPortLabel)
			}
			if len(svc.Checks) != 1 || svc.Checks[0].PortLabel != revmeta.PortLabel {
				t.Errorf("checks %+v, want the readiness check on port %q", svc.Checks, revmeta.PortLabel)
			}

			// 4. Placed only where the node says where rouse is; the user's constraints first.
			last := job.Constraints[len(job.Constraints)-1]
			if *last != (nomadapi.Constraint{LTarget: "${meta.rouse_bin}", Operand: "is_set"}) {
				t.Errorf("last constraint %+v", last)
			}
			if n := len(job.Constraints); n != 1+len(s.Constraints) {
				t.Errorf("%d constraints, want the spec's %d and the guard's", n, len(s.Constraints))
			}
			for _, c := range job.Constraints[:len(job.Constraints)-1] {
				if c.LTarget == "${meta.rouse_bin}" {
					t.Errorf("user constraint %+v", c)
				}
			}
		})
	}

	// Without a limit: no guard, one port, the service and its check on the app's port.
	for name, src := range specs {
		s := mustParse(t, strings.Replace(src, "concurrency = 4", "concurrency = 0", 1), nil, nil)
		job, _, err := Compile(s, 1)
		if err != nil {
			t.Fatal(err)
		}
		group := job.TaskGroups[0]
		svc := group.Tasks[0].Services[0]
		for _, task := range group.Tasks {
			if task.Name == revmeta.GuardTask {
				t.Errorf("%s: concurrency 0 has a guard task", name)
			}
		}
		if len(group.Networks[0].DynamicPorts) != 1 || svc.PortLabel != revmeta.PortLabel || svc.Checks[0].PortLabel != "" {
			t.Errorf("%s: ports %+v, service port %q, check port %q", name, group.Networks[0].DynamicPorts, svc.PortLabel, svc.Checks[0].PortLabel)
		}
		for _, c := range job.Constraints {
			if strings.Contains(c.LTarget, "rouse_bin") {
				t.Errorf("%s: concurrency 0 has constraint %+v", name, c)
			}
		}
	}
}

// TestGuardTimeoutArg: --timeout is the revision timeout as Go writes a duration, which
// the guard parses back.
func TestGuardTimeoutArg(t *testing.T) {
	for timeout, want := range map[string]string{"1s": "1s", "300s": "5m0s", "3600s": "1h0m0s", "2m30s": "2m30s"} {
		s := mustParse(t, "service \"g\" {\n  command = \"/x\"\n  concurrency = 1\n  timeout = \""+timeout+"\"\n}\n", nil, nil)
		job, _, err := Compile(s, 1)
		if err != nil {
			t.Fatal(err)
		}
		args := job.TaskGroups[0].Tasks[1].Config["args"].([]string)
		if got := args[len(args)-1]; got != want || args[len(args)-2] != "--timeout" || args[len(args)-3] != "1" {
			t.Errorf("timeout %s: args %q, want --timeout %s", timeout, args, want)
		}
		if d, err := time.ParseDuration(want); err != nil || d != s.Timeout {
			t.Errorf("timeout %s: %q parses to %v %v", timeout, want, d, err)
		}
	}
}

// TestGuardNameReserved: no sidecar may take the guard's task name, with or without a
// limit (so adding one never invalidates a spec), in HCL or in a hand-built Spec.
func TestGuardNameReserved(t *testing.T) {
	for _, conc := range []string{"0", "3"} {
		src := "service \"a\" {\n  image = \"x\"\n  concurrency = " + conc + "\n  sidecar \"rouse-guard\" {\n    command = \"x\"\n  }\n}\n"
		lookup := func(string) (string, bool) { return "", false }
		s, files, diags := parse(map[string][]byte{"svc.hcl": []byte(src)}, nil, lookup)
		if got := diagWants(diags, hcl.DiagError); !sameWants(got, []want{{"Invalid sidecar name", "svc.hcl:4:11"}}) {
			t.Errorf("concurrency %s: diagnostics %v\n%s", conc, got, diagText(files, diags))
		}
		if s != nil {
			t.Errorf("concurrency %s: spec returned along with errors", conc)
		}
		text := diagText(files, diags)
		for _, want := range []string{"Error: Invalid sidecar name", "on svc.hcl line 4", `sidecar "rouse-guard"`,
			`"rouse-guard" is reserved for rouse's concurrency guard`} {
			if !strings.Contains(text, want) {
				t.Errorf("concurrency %s: diagnostic text lacks %q:\n%s", conc, want, text)
			}
		}
	}

	s := mustParse(t, "service \"a\" {\n  image = \"x\"\n  concurrency = 2\n  sidecar \"p\" {\n    command = \"x\"\n  }\n}\n", nil, nil)
	s.Sidecars[0].Name = revmeta.GuardTask
	if _, _, err := Compile(s, 1); err == nil || !strings.Contains(err.Error(), "reserved for rouse's concurrency guard") {
		t.Errorf("hand-built sidecar named %s: %v", revmeta.GuardTask, err)
	}
}
