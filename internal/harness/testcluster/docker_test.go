package testcluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/registry"
)

// helloPort is the port examples/hello listens on inside its image ($PORT).
const helloPort = 8080

// TestDockerCluster is the container foundation's proof, on a cluster of its own with
// Docker on: an image built in Go from examples/hello and pushed to the cluster's
// registry runs as a Nomad docker job and answers on its mapped port; purging the job
// leaves no container; a leftover container of a dead agent is reaped; and Stop leaves
// neither a container nor an image of its registry behind.
func TestDockerCluster(t *testing.T) {
	c, err := Start(Options{Docker: true})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			if t.Failed() {
				c.DumpLogs(os.Stderr)
			}
			c.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	docker := agents.NewDocker()

	reg, err := c.Registry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Registry(ctx); again != reg {
		t.Fatal("Registry started a second registry")
	}
	bin, err := c.GoBuildStatic("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := reg.Push(ctx, "hello:test", registry.Image{Binary: bin, Env: []string{fmt.Sprintf("PORT=%d", helloPort)}})
	if err != nil {
		t.Fatal(err)
	}

	var allocID string
	t.Run("job runs and answers", func(t *testing.T) {
		allocID = runDockerJob(t, c, "docker-00001", ref.Pinned)
		cs, err := docker.Containers(ctx, agents.NomadAllocLabel+"="+allocID)
		if err != nil || len(cs) != 1 || cs[0].State != "running" {
			t.Fatalf("containers of alloc %s: %+v, %v", allocID, cs, err)
		}
		if cs[0].Image != ref.Pinned {
			t.Errorf("container runs %s, want %s", cs[0].Image, ref.Pinned)
		}
	})

	t.Run("purge leaves no container", func(t *testing.T) {
		if allocID == "" {
			t.Skip("no job ran")
		}
		if err := c.PurgeJobs(); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 30*time.Second, "no container of alloc "+allocID, func() error {
			cs, err := docker.Containers(ctx, agents.NomadAllocLabel+"="+allocID)
			if err == nil && len(cs) > 0 {
				err = fmt.Errorf("%d containers, first %s", len(cs), cs[0].State)
			}
			return err
		})
	})

	t.Run("reap removes a dead agent's containers", func(t *testing.T) {
		if err := docker.Pull(ctx, ref.Pinned); err != nil {
			t.Fatal(err)
		}
		dead := t.TempDir() // the dir of an agent that died without cleaning up
		allocDir := filepath.Join(dead, "nomad-data", "alloc", "0d7f1c9e-0000-4000-8000-000000000001")
		if err := os.MkdirAll(filepath.Join(allocDir, "alloc"), 0o755); err != nil {
			t.Fatal(err)
		}
		byMount := createContainer(t, docker, ref.Pinned, "0d7f1c9e-0000-4000-8000-000000000001", filepath.Join(allocDir, "alloc")+":/alloc")
		if err := os.MkdirAll(filepath.Join(dead, "nomad-data", "alloc", "0d7f1c9e-0000-4000-8000-000000000002"), 0o755); err != nil {
			t.Fatal(err)
		}
		byLabel := createContainer(t, docker, ref.Pinned, "0d7f1c9e-0000-4000-8000-000000000002", "")
		// Another agent's: no mount under dead, no alloc dir there. It must stay.
		other := createContainer(t, docker, ref.Pinned, "0d7f1c9e-0000-4000-8000-000000000003", t.TempDir()+":/alloc")

		if !agents.ReapDir(dead) {
			t.Fatal("ReapDir: dir in use")
		}
		left := map[string]bool{}
		cs, err := docker.Containers(ctx, agents.NomadAllocLabel)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			left[c.ID] = true
		}
		if left[byMount] || left[byLabel] {
			t.Errorf("left behind: by mount %v, by label %v", left[byMount], left[byLabel])
		}
		if !left[other] {
			t.Error("another agent's container was removed")
		}
	})

	t.Run("stop leaves no container and no image", func(t *testing.T) {
		id := runDockerJob(t, c, "docker-00002", ref.Pinned)
		stopped = true
		c.Stop()
		cs, err := docker.Containers(ctx, agents.NomadAllocLabel+"="+id)
		if err != nil || len(cs) != 0 {
			t.Errorf("containers of alloc %s after Stop: %+v, %v", id, cs, err)
		}
		ims, err := docker.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range ims {
			for _, r := range append(im.RepoTags, im.RepoDigests...) {
				if strings.HasPrefix(r, reg.Addr+"/") {
					t.Errorf("image %s still in the engine", r)
				}
			}
		}
		if ok, _ := processExited(reg.PID()); !ok {
			t.Errorf("registry pid %d still running", reg.PID())
		}
		if _, err := os.Stat(c.Dir); !os.IsNotExist(err) && os.Getenv("ROUSE_KEEP_TESTCLUSTER") == "" {
			t.Errorf("cluster dir %s still there: %v", c.Dir, err)
		}
	})
}

// runDockerJob runs image as a one-instance docker job, waits until it answers on its
// mapped port and returns its allocation.
func runDockerJob(t *testing.T, c *Cluster, id, image string) string {
	t.Helper()
	if _, _, err := c.Nomad.Jobs().Register(dockerJob(id, image), nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	var alloc *nomadapi.Allocation
	poll.Until(t, 90*time.Second, "a running allocation of "+id, func() error {
		stubs, _, err := c.Nomad.Jobs().Allocations(id, false, nil)
		if err != nil {
			return err
		}
		for _, s := range stubs {
			if s.ClientStatus == "running" {
				alloc, _, err = c.Nomad.Allocations().Info(s.ID, nil)
				return err
			}
			if s.ClientStatus == "failed" {
				return fmt.Errorf("alloc %s failed: %v", s.ID, s.TaskStates)
			}
		}
		return fmt.Errorf("%d allocations, none running", len(stubs))
	})
	var port nomadapi.PortMapping
	for _, p := range alloc.AllocatedResources.Shared.Ports {
		if p.Label == "http" {
			port = p
		}
	}
	if port.Value == 0 || port.To != helloPort {
		t.Fatalf("port mapping %+v", alloc.AllocatedResources.Shared.Ports)
	}
	url := fmt.Sprintf("http://%s:%d/", port.HostIP, port.Value)
	poll.Until(t, 30*time.Second, "an answer on "+url, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "Hello docker!" {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	})
	return alloc.ID
}

func dockerJob(id, image string) *nomadapi.Job {
	zero := 0
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"*"}
	job.Update = &nomadapi.UpdateStrategy{MaxParallel: &zero}
	tg := nomadapi.NewTaskGroup("app", 1)
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http", To: helloPort}}}}
	task := nomadapi.NewTask("app", "docker")
	task.Config = map[string]any{"image": image, "ports": []string{"http"}}
	task.Env = map[string]string{"TARGET": "docker"}
	task.Resources = &nomadapi.Resources{CPU: intp(50), MemoryMB: intp(32)}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

// createContainer creates and starts a container of image with Nomad's alloc label, as
// the docker driver would, and removes it when the test ends.
func createContainer(t *testing.T, d *agents.Docker, image, allocID, bind string) string {
	t.Helper()
	ctx := context.Background()
	spec := map[string]any{"Image": image, "Labels": map[string]string{agents.NomadAllocLabel: allocID}}
	if bind != "" {
		spec["HostConfig"] = map[string]any{"Binds": []string{bind}}
	}
	var created struct{ ID string }
	if err := d.Do(ctx, http.MethodPost, "/containers/create", spec, &created); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.RemoveContainer(context.Background(), created.ID) })
	if err := d.Do(ctx, http.MethodPost, "/containers/"+created.ID+"/start", nil, nil); err != nil {
		t.Fatal(err)
	}
	return created.ID
}

// processExited reports whether pid is gone (or a zombie nobody waits for).
func processExited(pid int) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if os.IsNotExist(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z", nil
}

// Without a Docker engine a Docker cluster fails to start, saying how to get one; it is
// never a skip.
func TestDockerMissingSaysMakeDocker(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "docker.sock"))
	c, err := Start(Options{Docker: true})
	if err == nil {
		c.Stop()
		t.Fatal("started without a Docker engine")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "run `make docker`") {
		t.Fatalf("error does not say to run `make docker`: %v", err)
	}
}
