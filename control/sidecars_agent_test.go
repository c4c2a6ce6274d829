package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/registry"
)

// sidecarBlock is a sidecar running image with small resources; extra goes inside it.
func sidecarBlock(name, what, extra string) string {
	return fmt.Sprintf(`  sidecar %q {
    %s
%s
    resources {
      cpu    = 20
      memory = 32
    }
  }
`, name, what, extra)
}

// logLines reads one task's log lines of svc, polling until one contains want.
func logLines(t *testing.T, c *Client, svc, task, want string) {
	t.Helper()
	poll.Until(t, 20*time.Second, fmt.Sprintf("%q in the logs of task %s", want, task), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var lines []string
		if err := c.Logs(ctx, "default", svc, LogOptions{Tail: 20, Task: task}, func(l LogLine) { lines = append(lines, l.Line) }); err != nil {
			return err
		}
		for _, l := range lines {
			if strings.Contains(l, want) {
				return nil
			}
		}
		return fmt.Errorf("not among %q", lines)
	})
}

// TestSidecarImages: a sidecar's image is pinned to its digest at apply like the main
// image, and runs beside the main container (its output in Logs with Task); a raw_exec
// init task runs before the docker main task; a sidecar tag that does not resolve fails
// the apply naming the sidecar with nothing registered; an init task that fails fails the
// apply in seconds; delete leaves no container of any task.
func TestSidecarImages(t *testing.T) {
	reg := testRegistry(t)
	c := agentClient()
	main := pushHello(t, reg, "side:v1", "main")
	echo := pushHello(t, reg, "side-echo:v1", "echo")
	sidecars := sidecarBlock("init", `command = "/bin/sh"`, `    args      = ["-c", "echo init ran for $ROUSE_REVISION"]
    lifecycle = "prestart"`) +
		sidecarBlock("echo", fmt.Sprintf("image = %q", echo.Tag), `    lifecycle = "poststart"
    env       = { PORT = "9000" }`)

	res := mustApply(t, c, parseSpec(t, "side", main.Tag, sidecars))
	job, img := jobImage(t, res.Revision)
	if img != main.Pinned {
		t.Errorf("main task runs %q, want %q", img, main.Pinned)
	}
	tasks := job.TaskGroups[0].Tasks
	if len(tasks) != 3 || tasks[1].Name != "init" || tasks[2].Name != "echo" {
		t.Fatalf("tasks of %s: %d", res.Revision, len(tasks))
	}
	if got, _ := tasks[2].Config["image"].(string); got != echo.Pinned {
		t.Errorf("sidecar runs %q, want its tag pinned to %q", got, echo.Pinned)
	}
	if got := answers(t, res.Revision, 1); got[0] != "Hello main!" {
		t.Fatalf("%s answers %q: the main task does not serve", res.Revision, got)
	}
	logLines(t, c, "side", "init", "init ran for "+res.Revision)
	logLines(t, c, "side", "echo", "hello: listening on :9000")
	logLines(t, c, "side", "", "hello: listening on :8080")

	// Re-applying the same spec is unchanged: the sidecar's digest is stable.
	if again := mustApply(t, c, parseSpec(t, "side", main.Tag, sidecars)); again.Outcome != OutcomeUnchanged {
		t.Errorf("re-apply: %s, want unchanged", again.Outcome)
	}

	boomBin, err := cluster.GoBuildStatic("./control/testdata/boom")
	if err != nil {
		t.Fatal(err)
	}
	boom, err := reg.Push(context.Background(), "side-boom:v1", registry.Image{Binary: boomBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("sidecar tag does not resolve", func(t *testing.T) {
		before := revisionNames(t, "side")
		bad := sidecarBlock("echo", fmt.Sprintf("image = %q", reg.Addr+"/nobody:v1"), "")
		_, took, err := apply(t, c, parseSpec(t, "side", main.Tag, bad))
		var ie *ImageError
		if !errors.As(err, &ie) || ie.Sidecar != "echo" || !strings.Contains(err.Error(), "sidecar echo: image ") ||
			!strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
			t.Fatalf("apply: %T %v", err, err)
		}
		if took > 10*time.Second {
			t.Errorf("took %s to fail", took)
		}
		if after := revisionNames(t, "side"); len(after) != len(before) {
			t.Errorf("a revision was registered: %v → %v", before, after)
		}
	})
	t.Run("init task fails", func(t *testing.T) {
		bad := sidecarBlock("init", fmt.Sprintf("image = %q", boom.Tag), `    lifecycle = "prestart"`)
		_, took, err := apply(t, c, parseSpec(t, "side", main.Tag, bad))
		var rf *RevisionFailedError
		if !errors.As(err, &rf) || !strings.Contains(err.Error(), "sidecar init: Terminated: Exit Code: 3") {
			t.Fatalf("apply: %T %v", err, err)
		}
		if took > 30*time.Second {
			t.Errorf("took %s to fail", took)
		}
	})
	wantRouteTo(t, "side", res.Revision)

	allocs, _, err := cluster.Nomad.Jobs().Allocations(res.Revision, true, nil)
	if err != nil || len(allocs) == 0 {
		t.Fatalf("allocations of %s: %d (%v)", res.Revision, len(allocs), err)
	}
	ids := map[string]bool{}
	for _, a := range allocs {
		ids[a.ID] = true
	}
	docker := agents.NewDocker()
	containers := func() (n int, err error) {
		cs, err := docker.Containers(context.Background(), agents.NomadAllocLabel)
		for _, c := range cs {
			if ids[c.Labels[agents.NomadAllocLabel]] {
				n++
			}
		}
		return n, err
	}
	if n, err := containers(); err != nil || n != 2 {
		t.Errorf("the engine lists %d containers of %s (%v), want 2: the main task and the sidecar", n, res.Revision, err)
	}
	deleteService(t, "side")
	poll.Until(t, 30*time.Second, "no container of the deleted service", func() error {
		if n, err := containers(); err != nil || n > 0 {
			return fmt.Errorf("%d containers (%v)", n, err)
		}
		return nil
	})
}
