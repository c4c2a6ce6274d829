package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

// An image service's output reaches `rouse logs` (the docker driver's log collection, not
// a file of the process), and delete leaves neither a job nor a container behind.
func TestImageLogsAndDelete(t *testing.T) {
	w := plat.workloads()[1]
	res := plat.apply(t, spec(w, "imglogs", "hello", "", ""), nil, nil)
	plat.waitServing(t, res.URL, res.Revision)
	path := fmt.Sprintf("/logged-%d", time.Now().UnixNano())
	if r := plat.mustGet(t, res.URL+path); r.code != http.StatusOK {
		t.Fatalf("GET %s: %d %q", path, r.code, r.body)
	}

	// The app logs each request on stdout; Logs reads the running instance's tail.
	poll.Until(t, 10*time.Second, "the request's log line in rouse logs", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var lines []string
		err := plat.ctl.Logs(ctx, "default", "imglogs"+w.suffix, control.LogOptions{Tail: 20}, func(l control.LogLine) { lines = append(lines, l.Line) })
		if err != nil {
			return err
		}
		for _, l := range lines {
			if strings.Contains(l, "GET "+path) {
				return nil
			}
		}
		return fmt.Errorf("not among %d lines: %q", len(lines), lines)
	})

	allocs, _, err := plat.c.Nomad.Jobs().Allocations(res.Revision, true, &nomadapi.QueryOptions{})
	if err != nil || len(allocs) == 0 {
		t.Fatalf("allocations of %s: %d (%v)", res.Revision, len(allocs), err)
	}
	ids := map[string]bool{}
	for _, a := range allocs {
		ids[a.ID] = true
	}
	docker := agents.NewDocker()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	containers := func() (n int, err error) {
		cs, err := docker.Containers(ctx, "com.hashicorp.nomad.alloc_id")
		for _, c := range cs {
			if ids[c.Labels["com.hashicorp.nomad.alloc_id"]] {
				n++
			}
		}
		return n, err
	}
	if n, err := containers(); err != nil || n == 0 {
		t.Fatalf("the engine lists %d containers of %s (%v), want the running one", n, res.Revision, err)
	}

	if _, err := plat.ctl.Delete(ctx, "default", "imglogs"+w.suffix, 40*time.Second, nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := plat.c.Nomad.Jobs().Info(res.Revision, &nomadapi.QueryOptions{}); err == nil {
		t.Errorf("job %s still exists after delete", res.Revision)
	}
	poll.Until(t, 30*time.Second, "no container of the deleted service", func() error {
		if n, err := containers(); err != nil || n > 0 {
			return fmt.Errorf("%d containers (%v)", n, err)
		}
		return nil
	})
	if r := plat.mustGet(t, res.URL); r.code != http.StatusNotFound {
		t.Errorf("after delete %s answers %d %q, want 404", res.URL, r.code, r.body)
	}
}
