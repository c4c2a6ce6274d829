package testcluster

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

var cluster *Cluster

func TestMain(m *testing.M) { os.Exit(Run(m, Options{}, &cluster)) }

// TestRawExecJobLifecycle is the foundation's proof: a raw_exec job on the real Nomad
// agent registers a Consul service whose check passes, answers HTTP, and scaling it to 0
// deregisters it.
func TestRawExecJobLifecycle(t *testing.T) {
	bin, err := cluster.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	job := helloJob("lifecycle-00001", bin)
	if _, _, err := cluster.Nomad.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register: %v", err)
	}

	es := cluster.WaitPassing(t, "lifecycle-00001", 1)
	addr := fmt.Sprintf("%s:%d", es[0].Service.Address, es[0].Service.Port)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "Hello testcluster!" {
		t.Fatalf("answer %d %q", resp.StatusCode, body)
	}

	zero := 0
	if _, _, err := cluster.Nomad.Jobs().Scale("lifecycle-00001", "app", &zero, "test scale to zero", false, nil, nil); err != nil {
		t.Fatalf("scale: %v", err)
	}
	poll.Until(t, 30*time.Second, "service deregistered from Consul", func() error {
		es, _, err := cluster.Consul.Health().Service("lifecycle-00001", "", false, nil)
		if err == nil && len(es) != 0 {
			err = fmt.Errorf("%d instances listed", len(es))
		}
		return err
	})
	if _, err := http.Get("http://" + addr + "/"); err == nil {
		// The process must be gone once the alloc stopped.
		poll.Until(t, 15*time.Second, "process stopped", poll.True(func() bool {
			_, err := http.Get("http://" + addr + "/")
			return err != nil
		}))
	}
}

func TestGoBuildIsCached(t *testing.T) {
	a, err := cluster.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cluster.GoBuild("./examples/hello")
	if a != b {
		t.Fatalf("%s != %s", a, b)
	}
}

func TestACLClusterDeniesWithoutToken(t *testing.T) {
	c, err := Start(Options{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if c.ConsulToken == "" || c.NomadToken == "" {
		t.Fatal("no management tokens")
	}
	if _, _, err := c.Nomad.Jobs().List(nil); err != nil {
		t.Fatalf("with token: %v", err)
	}
	cfg := nomadapi.DefaultConfig()
	cfg.Address = c.NomadAddr
	cfg.SecretID = ""
	anon, _ := nomadapi.NewClient(cfg)
	if _, _, err := anon.Jobs().List(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("anonymous nomad list: want 403, got %v", err)
	}
	ccfg := consulapi.DefaultConfig()
	ccfg.Address = c.ConsulAddr
	canon, _ := consulapi.NewClient(ccfg)
	if _, err := canon.KV().Put(&consulapi.KVPair{Key: "x", Value: []byte("y")}, nil); err == nil {
		t.Fatal("anonymous consul KV write allowed")
	}
}

func helloJob(id, bin string) *nomadapi.Job {
	zero := 0
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"*"}
	job.Update = &nomadapi.UpdateStrategy{MaxParallel: &zero}
	tg := nomadapi.NewTaskGroup("app", 1)
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
	delay := 2 * time.Second
	tg.ShutdownDelay = &delay
	tg.Services = []*nomadapi.Service{{
		Name: id, PortLabel: "http", Provider: "consul", Tags: []string{"rouse"},
		Checks: []nomadapi.ServiceCheck{{Type: "http", Path: "/healthz", Interval: time.Second, Timeout: time.Second}},
	}}
	task := nomadapi.NewTask("app", "raw_exec")
	task.Config = map[string]any{"command": bin}
	task.Env = map[string]string{"PORT": "${NOMAD_PORT_http}", "TARGET": "testcluster"}
	task.Resources = &nomadapi.Resources{CPU: intp(50), MemoryMB: intp(32)}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

func intp(i int) *int { return &i }

// Stopping a cluster with a running workload leaves no process and no directory behind.
func TestStopLeavesNothingBehind(t *testing.T) {
	c, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	bin, err := cluster.GoBuild("./examples/hello")
	if err != nil {
		c.Stop()
		t.Fatal(err)
	}
	if _, _, err := c.Nomad.Jobs().Register(helloJob("leftover-00001", bin), nil); err != nil {
		c.Stop()
		t.Fatal(err)
	}
	c.WaitPassing(t, "leftover-00001", 1)
	c.Stop()
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Fatalf("cluster dir %s still there: %v", c.Dir, err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		// Task helpers such as logmon name no path on their command line; the files
		// they hold open under the cluster dir give them away.
		if bytes.Contains(b, []byte(c.Dir)) || agents.HoldsPath(pid, c.Dir) {
			t.Errorf("process %s outlived the cluster: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
