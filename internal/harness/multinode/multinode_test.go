package multinode

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/revmeta"
)

// TestCluster proves the harness's primitives on a real cluster: every node joins Consul
// and Nomad (edges in their pool), a job's instances spread over the workers on ports of
// each node's own range, a lost node's agents and workloads are dead at once and Nomad
// places its instance elsewhere, a paused node's processes are stopped and run again on
// Resume, a killed Nomad leader is replaced and rejoins when restarted, a restarted Consul
// server keeps its KV, and Stop leaves no process behind.
func TestCluster(t *testing.T) {
	c, err := Start(Options{Workers: 3, Edges: 1, NomadServers: 3})
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

	members, err := c.Consul.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 5 { // server + 3 workers + 1 edge
		t.Fatalf("%d Consul members, want 5: %+v", len(members), members)
	}
	nodes, _, err := c.Nomad.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	pools := map[string]string{}
	for _, n := range nodes {
		if n.Status != "ready" {
			t.Errorf("node %s is %s", n.Name, n.Status)
		}
		pools[n.Name] = n.NodePool
	}
	if len(pools) != 4 || pools["edge-1"] != EdgePool || pools["worker-1"] != "default" {
		t.Fatalf("nodes and pools: %v", pools)
	}
	// Every node advertises the cluster's rouse as meta.rouse_bin: the guard tasks' command.
	rouse, err := c.GoBuild("./cmd/rouse")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		nd, _, err := c.Nomad.Nodes().Info(n.Nomad.NodeID(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := nd.Meta[revmeta.GuardBinMeta]; got != rouse {
			t.Errorf("node %s: meta.%s = %q, want %s", n.Name, revmeta.GuardBinMeta, got, rouse)
		}
	}

	sleep, err := c.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	job := helloJob("spread", sleep, 2) // on 2 of the 3 workers: one is free for a replacement
	if _, _, err := c.Nomad.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	byNode := map[string]*nomadapi.AllocationListStub{}
	poll.Until(t, 60*time.Second, "2 running allocations on 2 workers", func() error {
		byNode = running(t, c, "spread")
		if len(byNode) != 2 {
			return fmt.Errorf("running on %d nodes", len(byNode))
		}
		return nil
	})
	for name, a := range byNode {
		al, _, err := c.Nomad.Allocations().Info(a.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		port := al.AllocatedResources.Shared.Ports[0].Value
		var i int
		fmt.Sscanf(name, "worker-%d", &i)
		if lo := 20000 + 1000*(i-1); port < lo || port > lo+999 {
			t.Errorf("alloc on %s has port %d, outside its node's %d–%d", name, port, lo, lo+999)
		}
	}

	var victim *Node
	t.Run("lose", func(t *testing.T) {
		for _, n := range c.Workers {
			if byNode[n.Name] != nil {
				victim = n
			}
		}
		work := victim.Nomad.Workloads()
		if len(work) == 0 {
			t.Fatal("the victim runs no workload")
		}
		c.Lose(victim)
		for _, pid := range append(work, victim.Nomad.PID(), victim.Consul.PID()) {
			if alive(pid) {
				t.Errorf("pid %d alive after Lose", pid)
			}
		}
		took := poll.Until(t, 60*time.Second, "Consul marks the lost node critical", func() error {
			hs, _, err := c.Consul.Health().Node(victim.Name, nil)
			if err != nil {
				return err
			}
			for _, h := range hs {
				if h.CheckID == "serfHealth" && h.Status == "critical" {
					return nil
				}
			}
			return fmt.Errorf("checks %v", hs)
		})
		t.Logf("Consul: node critical %v after the loss", took)
		took = poll.Until(t, 60*time.Second, "the instance replaced on the survivors", func() error {
			m := running(t, c, "spread")
			if len(m) != 2 || m[victim.Name] != nil {
				return fmt.Errorf("running on %v", keys(m))
			}
			return nil
		})
		t.Logf("Nomad: replaced %v after the loss", took)
	})

	t.Run("pause", func(t *testing.T) {
		var n *Node
		for _, w := range c.Workers {
			if w != victim && len(w.Nomad.Workloads()) > 0 {
				n = w
			}
		}
		if n == nil {
			t.Fatal("no surviving worker runs a workload")
		}
		work := n.Nomad.Workloads()
		c.Pause(n)
		// SIGSTOP takes effect a moment after it is sent.
		poll.Until(t, 5*time.Second, "the paused node's processes stopped", func() error {
			for _, pid := range append([]int{n.Nomad.PID(), n.Consul.PID()}, work...) {
				if st := procState(pid); st != "T" {
					return fmt.Errorf("pid %d in state %q", pid, st)
				}
			}
			return nil
		})
		c.Resume(n)
		if st := procState(n.Nomad.PID()); st == "T" {
			t.Error("agent still stopped after Resume")
		}
	})

	t.Run("servers", func(t *testing.T) {
		// The Nomad leader killed: another leads; restarted, it rejoins (3 alive).
		old, err := c.KillNomadLeader()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitNomadLeader(context.Background(), old.RPCAddr); err != nil {
			t.Fatal(err)
		}
		if err := c.RestartNomadServer(context.Background(), old); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 30*time.Second, "3 alive Nomad servers", func() error {
			ms, err := c.Nomad.Agent().Members()
			if err != nil {
				return err
			}
			alive := 0
			for _, m := range ms.Members {
				if m.Status == "alive" {
					alive++
				}
			}
			if alive != 3 {
				return fmt.Errorf("%d alive", alive)
			}
			return nil
		})
		// The Consul server restarted keeps its KV.
		if _, err := c.Consul.KV().Put(&consulapi.KVPair{Key: "multinode/test", Value: []byte("kept")}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RestartConsulServer(context.Background()); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 10*time.Second, "the KV written before the restart", func() error {
			kv, _, err := c.Consul.KV().Get("multinode/test", nil)
			if err != nil || kv == nil || string(kv.Value) != "kept" {
				return fmt.Errorf("%v %v", kv, err)
			}
			return nil
		})
	})

	all := []int{c.ConsulServer.PID()}
	for _, s := range c.NomadServers {
		all = append(all, s.PID())
	}
	for _, n := range c.Nodes() {
		all = append(all, n.Nomad.PID(), n.Consul.PID())
		all = append(all, n.Nomad.Workloads()...)
	}
	stopped = true
	c.Stop()
	for _, pid := range all {
		if alive(pid) {
			t.Errorf("pid %d alive after Stop", pid)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("cluster dir left: %v", err)
	}
}

func helloJob(id, bin string, count int) *nomadapi.Job {
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	tg := nomadapi.NewTaskGroup("app", count)
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
	tg.Constraints = []*nomadapi.Constraint{{Operand: "distinct_hosts", RTarget: "true"}}
	task := nomadapi.NewTask("app", "raw_exec")
	task.Config = map[string]any{"command": bin}
	task.Env = map[string]string{"PORT": "${NOMAD_PORT_http}"}
	task.Resources = &nomadapi.Resources{CPU: ptr(20), MemoryMB: ptr(32)}
	tg.Tasks = []*nomadapi.Task{task}
	job.TaskGroups = []*nomadapi.TaskGroup{tg}
	return job
}

func ptr[T any](v T) *T { return &v }

// running is job's running allocations by node name.
func running(t *testing.T, c *Cluster, job string) map[string]*nomadapi.AllocationListStub {
	stubs, _, err := c.Nomad.Jobs().Allocations(job, false, nil)
	if err != nil {
		t.Logf("allocations: %v", err)
		return nil
	}
	m := map[string]*nomadapi.AllocationListStub{}
	for _, s := range stubs {
		if s.ClientStatus == "running" {
			m[s.NodeName] = s
		}
	}
	return m
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	return procState(pid) != "Z"
}

// procState is the state letter of /proc/<pid>/stat ("" when gone).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return string(b[i+2])
		}
	}
	return ""
}
