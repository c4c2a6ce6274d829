package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/registry"
	"github.com/rouse-run/rouse/jobspec"
)

// Templates and volumes on the real agent, with control/testdata/probe as the workload:
// it prints an env var or a file of the instance, or tries to write one.

// probeGet GETs path from the one passing instance of rev.
func probeGet(t *testing.T, rev, path string, q url.Values) string {
	t.Helper()
	e := cluster.WaitPassing(t, rev, 1)[0]
	u := "http://" + net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)) + path + "?" + q.Encode()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func parseSrc(t *testing.T, name, src string) *jobspec.Spec {
	t.Helper()
	s, diags := jobspec.Parse(map[string][]byte{name + ".hcl": []byte(src)}, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return s
}

func putVariable(t *testing.T, path string, items map[string]string) {
	t.Helper()
	if _, _, err := cluster.Nomad.Variables().Create(&nomadapi.Variable{Namespace: "default", Path: path, Items: items}, nil); err != nil {
		t.Fatalf("nomad var put %s: %v", path, err)
	}
	t.Cleanup(func() { _, _ = cluster.Nomad.Variables().Delete(path, nil) })
}

// TestTemplateVariablesReachInstance: a Nomad Variable written in the agent reaches the
// instance as env (env = true) and as a file; its value is nowhere in rouse's output, the
// job or Consul KV; a change of the value is re-rendered by Nomad into the running
// instance and is not a new revision.
func TestTemplateVariablesReachInstance(t *testing.T) {
	bin, err := cluster.GoBuild("./control/testdata/probe")
	if err != nil {
		t.Fatal(err)
	}
	secret := fmt.Sprintf("s3cr3t-%d", time.Now().UnixNano())
	putVariable(t, "nomad/jobs/tvars/db", map[string]string{"password": secret, "user": "app"})
	s := parseSrc(t, "tvars", fmt.Sprintf(`service "tvars" {
  command = %q
  readiness {
    path = "/healthz"
  }
  resources {
    cpu    = 50
    memory = 32
  }
  template {
    destination = "secrets/db.env"
    env         = true
    data        = <<-EOT
      DB_PASSWORD={{ with nomadVar "nomad/jobs/tvars/db" }}{{ .password }}{{ end }}
    EOT
  }
  template {
    destination = "local/user.txt"
    change_mode = "noop"
    data        = "{{ with nomadVar \"nomad/jobs/tvars/db\" }}{{ .user }}{{ end }}"
  }
}
`, bin))
	c := agentClient()
	res := mustApply(t, c, s)
	t.Cleanup(func() { deleteService(t, "tvars") })
	rev := res.Revision

	if got := probeGet(t, rev, "/env", url.Values{"name": {"DB_PASSWORD"}}); got != secret {
		t.Errorf("$DB_PASSWORD = %q, want the variable's password", got)
	}
	if got := probeGet(t, rev, "/file", url.Values{"path": {"secrets/db.env"}}); strings.TrimSpace(got) != "DB_PASSWORD="+secret {
		t.Errorf("secrets/db.env = %q", got)
	}
	if got := probeGet(t, rev, "/file", url.Values{"path": {"local/user.txt"}}); got != "app" {
		t.Errorf("local/user.txt = %q, want app", got)
	}

	// The value is in none of rouse's output, the job, or Consul KV.
	out, _ := json.Marshal(res)
	job, _, err := cluster.Nomad.Jobs().Info(rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	jobJSON, _ := json.Marshal(job)
	kv, _, err := cluster.Consul.KV().List("", nil)
	if err != nil {
		t.Fatal(err)
	}
	var kvAll strings.Builder
	for _, p := range kv {
		kvAll.WriteString(p.Key + "=" + string(p.Value) + "\n")
	}
	for what, text := range map[string]string{"apply result": string(out), "revision job": string(jobJSON), "Consul KV": kvAll.String()} {
		if strings.Contains(text, secret) {
			t.Errorf("the secret's value is in the %s", what)
		}
	}
	if !strings.Contains(templatesJSON(job), "nomad/jobs/tvars/db") {
		t.Error("the job does not carry the template's reference")
	}

	// A change of the value: Nomad re-renders (noop: the file changes under the running
	// task); re-applying the spec is not a new revision.
	if _, _, err := cluster.Nomad.Variables().Update(&nomadapi.Variable{Namespace: "default", Path: "nomad/jobs/tvars/db",
		Items: map[string]string{"password": secret, "user": "app2"}}, nil); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "local/user.txt re-rendered", func() error {
		if got := probeGet(t, rev, "/file", url.Values{"path": {"local/user.txt"}}); got != "app2" {
			return fmt.Errorf("local/user.txt = %q", got)
		}
		return nil
	})
	if again := mustApply(t, c, s); again.Outcome != OutcomeUnchanged || again.Revision != rev {
		t.Errorf("re-apply after the value changed: %s %s, want unchanged %s", again.Outcome, again.Revision, rev)
	}
}

// templatesJSON is the main task's templates as Nomad holds them.
func templatesJSON(job *nomadapi.Job) string {
	b, _ := json.Marshal(job.TaskGroups[0].Tasks[0].Templates)
	return string(b)
}

// TestTemplateMissingVariableRefused: a template reading a variable that does not exist
// fails the apply in moments, pointing at the template, with nothing registered (Nomad
// would leave the task pending, waiting for the variable).
func TestTemplateMissingVariableRefused(t *testing.T) {
	s := parseSrc(t, "tmissing", `service "tmissing" {
  command = "/bin/true"
  template {
    destination = "secrets/a"
    data        = "{{ with nomadVar \"nomad/jobs/tmissing/none\" }}{{ .p }}{{ end }}"
  }
}
`)
	_, took, err := apply(t, agentClient(), s)
	var diags hcl.Diagnostics
	if !errors.As(err, &diags) || len(diags) != 1 || diags[0].Summary != "Missing Nomad Variable" ||
		!strings.Contains(diags[0].Detail, `"nomad/jobs/tmissing/none"`) || diags[0].Subject == nil || diags[0].Subject.Start.Line != 5 {
		t.Fatalf("apply: %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("refused after %s", took)
	}
	if names := revisionNames(t, "tmissing"); len(names) != 0 {
		t.Errorf("revisions registered: %v", names)
	}
}

// TestHostVolumeReadOnly: a host volume mounted read-only is readable and not writable,
// and a scratch volume beside it is writable (docker: the probe as an image).
func TestHostVolumeReadOnly(t *testing.T) {
	reg := testRegistry(t)
	bin, err := cluster.GoBuildStatic("./control/testdata/probe")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := reg.Push(context.Background(), "probe:v1", registry.Image{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostVolumeDir, "hello.txt"), []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := parseSpec(t, "vol", ref.Tag, `
  volume "data" {
    type        = "host"
    source      = "rouse-test-data"
    destination = "/data"
    read_only   = true
  }
  volume "tmp" {
    type        = "scratch"
    destination = "/scratch"
  }
`)
	res := mustApply(t, agentClient(), s)
	t.Cleanup(func() { deleteService(t, "vol") })
	rev := res.Revision
	if got := probeGet(t, rev, "/file", url.Values{"path": {"/data/hello.txt"}}); got != "from the host" {
		t.Errorf("/data/hello.txt = %q", got)
	}
	if got := probeGet(t, rev, "/write", url.Values{"path": {"/data/new.txt"}}); !strings.Contains(got, "read-only file system") {
		t.Errorf("writing /data/new.txt: %q, want read-only file system", got)
	}
	if _, err := os.Stat(filepath.Join(hostVolumeDir, "new.txt")); err == nil {
		t.Error("the read-only volume was written")
	}
	if got := probeGet(t, rev, "/write", url.Values{"path": {"/scratch/x"}}); got != "ok" {
		t.Errorf("writing /scratch/x: %q", got)
	}
}

// TestUnplaceableVolumeFailsFast: a host volume no node has, or a CSI volume Nomad does
// not know, fails the apply at Nomad's plan, with its reason, before anything is
// registered.
func TestUnplaceableVolumeFailsFast(t *testing.T) {
	for _, c := range []struct{ svc, typ, reason string }{
		{"volnone", "host", "missing compatible host volumes"},
		{"csinone", "csi", "missing CSI Volume no-such-volume"},
	} {
		t.Run(c.typ, func(t *testing.T) {
			s := parseSpec(t, c.svc, "127.0.0.1:1/none@sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03", fmt.Sprintf(`
  volume "data" {
    type        = %q
    source      = "no-such-volume"
    destination = "/data"
  }
`, c.typ))
			_, took, err := apply(t, agentClient(), s)
			var pe *PlacementError
			if !errors.As(err, &pe) || !strings.Contains(pe.Reason, c.reason) {
				t.Fatalf("apply: %v, want a placement error with %q", err, c.reason)
			}
			if took > 10*time.Second {
				t.Errorf("refused after %s", took)
			}
			if names := revisionNames(t, c.svc); len(names) != 0 {
				t.Errorf("revisions registered: %v", names)
			}
		})
	}
}

// TestTemplateBlockedFailsFast: an instance whose template waits for a variable (one
// deleted after apply checked it, say) fails the wait in seconds with Nomad's "Missing:"
// event naming it, not at the end of --wait.
func TestTemplateBlockedFailsFast(t *testing.T) {
	s := parseSrc(t, "tblocked", `service "tblocked" {
  command = "/bin/sleep"
  args    = ["600"]
  template {
    destination = "secrets/a"
    data        = "{{ with nomadVar \"nomad/jobs/tblocked/gone\" }}{{ .p }}{{ end }}"
  }
}
`)
	job, _, err := jobspec.Compile(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := cluster.Nomad.Jobs().Register(job, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _, _ = cluster.Nomad.Jobs().Deregister(*job.ID, true, nil) })
	c := agentClient()
	start := time.Now()
	err = c.waitReady(context.Background(), "default", *job.ID, resp.EvalID, readinessOf(job), time.Minute, nil)
	took := time.Since(start)
	var rf *RevisionFailedError
	if !errors.As(err, &rf) || !strings.Contains(rf.Reason, "Missing: nomad.var.block(nomad/jobs/tblocked/gone") {
		t.Fatalf("wait: %v", err)
	}
	t.Logf("failed after %s: %s", took.Round(time.Millisecond), rf.Reason)
	if took > 20*time.Second {
		t.Errorf("failed after %s", took)
	}
}

// TestFailureOfTemplateBlocked: Nomad's "Missing:" template event fails the wait; other
// template events (rendering, re-rendering) do not.
func TestFailureOfTemplateBlocked(t *testing.T) {
	allocs := []*nomadapi.AllocationListStub{{ID: "0123456789", ClientStatus: "pending", TaskStates: map[string]*nomadapi.TaskState{
		"app": {Events: []*nomadapi.TaskEvent{
			{Type: nomadapi.TaskReceived, DisplayMessage: "Task received by client"},
			{Type: "Template", DisplayMessage: "Missing: nomad.var.block(nomad/jobs/shop/db@default.global)"},
		}},
	}}}
	f := failureOf(allocs)
	if f == nil || !strings.HasPrefix(f.Reason, "Template: Missing: nomad.var.block(nomad/jobs/shop/db@default.global) (") {
		t.Fatalf("%+v", f)
	}
	allocs[0].TaskStates["app"].Events[1].DisplayMessage = "Template re-rendered"
	if f := failureOf(allocs); f != nil {
		t.Fatalf("a re-render is not a failure: %+v", f)
	}
}
