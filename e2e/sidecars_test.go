package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

// TestSidecarsScaleToZeroAndWake: a service whose instances have an init task (writing a
// file into the allocation's shared directory) and a poststart sidecar (reading it) serves
// through the gateway, scales to zero leaving no sidecar process, and wakes from zero
// with both tasks run again for the new instance, each one's output in Logs with Task.
func TestSidecarsScaleToZeroAndWake(t *testing.T) {
	eachWorkload(t, testSidecarsScaleToZeroAndWake)
}

func testSidecarsScaleToZeroAndWake(t *testing.T, w workload) {
	mark := fmt.Sprintf("e2e-sidecar-%d", time.Now().UnixNano())
	body := fmt.Sprintf(`
  sidecar "init" {
    command   = "/bin/sh"
    args      = ["-c", "echo \"init: $NOMAD_ALLOC_ID %[1]s\"; echo ready > $NOMAD_ALLOC_DIR/data/init-done"]
    lifecycle = "prestart"
    resources {
      cpu    = 20
      memory = 16
    }
  }
  sidecar "tail" {
    command   = "/bin/sh"
    args      = ["-c", "echo \"tail: $NOMAD_ALLOC_ID $(cat $NOMAD_ALLOC_DIR/data/init-done) %[1]s\"; while :; do sleep 1; done"]
    lifecycle = "poststart"
    resources {
      cpu    = 20
      memory = 16
    }
  }
`, mark)
	svc := "sidecars" + w.suffix
	res := plat.apply(t, spec(w, "sidecars", "hello", body, ""), nil, nil)
	plat.waitServing(t, res.URL, res.Revision)

	// taskLine waits for the task's line of the running instance and returns its alloc ID.
	taskLine := func(task, want string) string {
		var id string
		poll.Until(t, 20*time.Second, task+"'s line in the logs", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var lines []string
			err := plat.ctl.Logs(ctx, "default", svc, control.LogOptions{Tail: 5, Task: task}, func(l control.LogLine) {
				lines = append(lines, l.Line)
			})
			if err != nil {
				return err
			}
			for _, l := range lines {
				if f := strings.Fields(l); strings.HasSuffix(l, want+" "+mark) && len(f) >= 2 {
					id = f[1]
					return nil
				}
			}
			return fmt.Errorf("not among %q", lines)
		})
		return id
	}
	first := taskLine("init", "")
	if got := taskLine("tail", first+" ready"); got != first {
		t.Fatalf("the poststart task runs in %s, the init task in %s", got, first)
	}
	if n := processesWith(mark); n < 1 {
		t.Fatalf("%d processes of the tail sidecar before scaling to zero", n)
	}

	poll.Until(t, 45*time.Second, "idle revision scaled to zero", func() error { return plat.atZero(res.Revision, true) })
	poll.Until(t, 15*time.Second, "no sidecar process at zero", func() error {
		if n := processesWith(mark); n > 0 {
			return fmt.Errorf("%d processes of the sidecars", n)
		}
		return nil
	})

	r := plat.mustGet(t, res.URL)
	if r.code != http.StatusOK || r.cold == "" {
		t.Fatalf("wake from zero answered %d %q (cold start %q)", r.code, r.body, r.cold)
	}
	t.Logf("wake from zero with an init task: answered in %s, held %s", r.took.Round(time.Millisecond), r.cold)
	second := taskLine("init", "")
	if second == first {
		t.Fatalf("after the wake the init task's line is the first instance's (%s)", first)
	}
	if got := taskLine("tail", second+" ready"); got != second {
		t.Fatalf("after the wake the poststart task runs in %s, the init task in %s", got, second)
	}
}

// processesWith counts the processes whose command line contains s.
func processesWith(s string) int {
	n := 0
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) {
			n++
		}
	}
	return n
}
