package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/poll"
)

// TestSidecarLogs: a revision with an init task (prestart) that writes a file into the
// allocation's shared directory, a sidecar started before the main task, and a poststart
// sidecar that reads the init task's file: apply waits past the init task's exit, each
// task's output is in `rouse logs --task`, an unknown task lists the tasks, and delete
// leaves no process of any task running.
func TestSidecarLogs(t *testing.T) {
	mark := fmt.Sprintf("sidecar-mark-%d", time.Now().UnixNano()) // in every shell's command line
	spec := writeSpec(t, "sidecars", fmt.Sprintf(`
  sidecar "init" {
    command   = "/bin/sh"
    args      = ["-c", "echo 'init: writing greeting %[1]s'; echo 'hello from init' > $NOMAD_ALLOC_DIR/data/greeting"]
    lifecycle = "prestart"
  }
  sidecar "beside" {
    command = "/bin/sh"
    args    = ["-c", "echo 'beside: up %[1]s'; while :; do sleep 1; done"]
    resources {
      cpu    = 20
      memory = 16
    }
  }
  sidecar "tail" {
    command   = "/bin/sh"
    args      = ["-c", "echo \"tail: read $(cat $NOMAD_ALLOC_DIR/data/greeting) %[1]s\"; while :; do echo 'tail: tick' >&2; sleep 1; done"]
    lifecycle = "poststart"
    env = {
      PORT = "1"
    }
    resources {
      cpu    = 20
      memory = 16
    }
  }
`, mark))
	mustRouse(t, "apply", "-f", spec, "--wait", "60s")
	t.Cleanup(func() { rouse(t, "delete", "sidecars") })

	// The main task is the one that serves and the default of --task.
	if body := get(t, "sidecars-00001"); body == "" {
		t.Fatal("the main task does not answer")
	}
	logs := func(args ...string) string {
		var out string
		poll.Until(t, 20*time.Second, "rouse logs "+strings.Join(args, " "), func() error {
			r := mustRouse(t, append([]string{"logs", "sidecars"}, args[:len(args)-1]...)...)
			out = r.stdout
			if !strings.Contains(out, args[len(args)-1]) {
				return fmt.Errorf("printed %q", out)
			}
			return nil
		})
		return out
	}
	if out := logs("hello: listening on"); strings.Contains(out, mark) {
		t.Errorf("the main task's logs show a sidecar's line:\n%s", out)
	}
	logs("--task", "app", "hello: listening on")
	if out := logs("--task", "init", "init: writing greeting "+mark); !strings.HasPrefix(out, "sidecars-00001 ") {
		t.Errorf("a sidecar's line lacks the revision and instance: %q", out)
	}
	logs("--task", "beside", "beside: up "+mark)
	// The poststart task started after the init task had written its file.
	logs("--task", "tail", "tail: read hello from init "+mark)
	logs("--task", "tail", "--stderr", "tail: tick")

	// -f follows a sidecar too: its lines written after the start show up.
	followed := followLines(t, 15*time.Second, "logs", "sidecars", "--task", "tail", "--stderr", "-f", "--tail", "0")
	if len(followed) < 2 || !strings.HasSuffix(followed[0], "tail: tick") || !strings.HasPrefix(followed[0], "sidecars-00001 ") {
		t.Errorf("rouse logs -f --task tail --stderr: %q", followed)
	}

	e := rouse(t, "logs", "sidecars", "--task", "nope")
	if e.code == 0 || !strings.Contains(e.stderr, `no task "nope"`) || !strings.Contains(e.stderr, "sidecars-00001 has tasks app, init, beside, tail") {
		t.Errorf("logs of an unknown task must fail listing the revision's tasks: %s", e)
	}

	// The instance runs: the main task and both sidecars running, the init task done.
	allocs, _, err := cluster.Nomad.Jobs().Allocations("sidecars-00001", false, nil)
	if err != nil || len(allocs) != 1 {
		t.Fatalf("allocations: %d (%v)", len(allocs), err)
	}
	states := map[string]string{}
	for name, ts := range allocs[0].TaskStates {
		states[name] = ts.State
		if name == "init" && ts.Failed {
			t.Errorf("init task failed: %+v", ts.Events)
		}
	}
	want := map[string]string{"app": "running", "init": "dead", "beside": "running", "tail": "running"}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("task states %v, want %v", states, want)
	}

	if n := processesWith(mark); n < 2 {
		t.Fatalf("%d processes of the sidecars found before delete, want 2 (beside, tail): the check below would prove nothing", n)
	}
	mustRouse(t, "delete", "sidecars")
	if _, _, err := cluster.Nomad.Jobs().Info("sidecars-00001", &nomadapi.QueryOptions{}); err == nil {
		t.Errorf("job sidecars-00001 still exists after delete")
	}
	poll.Until(t, 30*time.Second, "no process of the deleted service's tasks", func() error {
		if n := processesWith(mark); n > 0 {
			return fmt.Errorf("%d processes still run a sidecar", n)
		}
		return nil
	})
}

// processesWith counts the processes whose command line contains s.
func processesWith(s string) int {
	n := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) {
			n++
		}
	}
	return n
}

// followLines runs rouse with args (a -f) and returns the lines it printed until it had
// printed two, or for at most d, then interrupts it.
func followLines(t *testing.T, d time.Duration, args ...string) []string {
	t.Helper()
	bin, _ := bins(t)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, cluster.Env()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(stdout)
	for len(out) < 2 && sc.Scan() {
		out = append(out, sc.Text())
	}
	cancel()
	_ = cmd.Wait()
	return out
}
