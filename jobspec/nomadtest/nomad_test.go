package nomadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/jobspec"
)

// TestMain runs one Consul + Nomad pair for the package. The cluster is TestMain's, handed
// to the tests through this variable: testing.M offers no other way.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(testcluster.Run(m, testcluster.Options{}, &cluster)) }

// compiledExamples returns every job to check: the golden files (which TestGolden keeps
// equal to what Compile makes of testdata) and the repo's examples/*/service.hcl.
func compiledExamples(t *testing.T) map[string]*nomadapi.Job {
	t.Helper()
	jobs := map[string]*nomadapi.Job{}
	goldens, _ := filepath.Glob(filepath.Join("..", "testdata", "*.golden.json"))
	if len(goldens) == 0 {
		t.Fatal("no golden files in ../testdata")
	}
	for _, g := range goldens {
		b, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		var job nomadapi.Job
		if err := json.Unmarshal(b, &job); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
		jobs[filepath.Base(g)] = &job
	}
	root, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	specs, _ := filepath.Glob(filepath.Join(root, "examples", "*", "service.hcl"))
	for _, p := range specs {
		// The examples take the folder of their built binary as -var bin (see make dev).
		s, files, diags := jobspec.ParseFiles([]string{p}, map[string]string{"bin": "/opt/rouse/bin"})
		if diags.HasErrors() {
			var b strings.Builder
			_ = hclWriter(&b, files).WriteDiagnostics(diags)
			t.Fatalf("%s:\n%s", p, b.String())
		}
		job, _, err := jobspec.Compile(s, 1)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		jobs[rel] = job
	}
	t.Logf("%d golden jobs, %d examples/*/service.hcl", len(goldens), len(specs))
	return jobs
}

func ensureNamespace(t *testing.T, ns string) {
	t.Helper()
	if ns == "default" {
		return
	}
	if _, err := cluster.Nomad.Namespaces().Register(&nomadapi.Namespace{Name: ns}, nil); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
}

// TestCompiledJobsValidateAndPlan: Nomad itself accepts every compiled example, without
// warnings.
func TestCompiledJobsValidateAndPlan(t *testing.T) {
	// memory_max is only honoured (and warned about otherwise) where the operator enabled
	// memory oversubscription, as a cluster running full.hcl would have.
	sc, _, err := cluster.Nomad.Operator().SchedulerGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	sc.SchedulerConfig.MemoryOversubscriptionEnabled = true
	if set, _, err := cluster.Nomad.Operator().SchedulerSetConfiguration(sc.SchedulerConfig, nil); err != nil || !set.Updated {
		t.Fatalf("enable memory oversubscription: %v %+v", err, set)
	}
	for name, job := range compiledExamples(t) {
		t.Run(name, func(t *testing.T) {
			ensureNamespace(t, *job.Namespace)
			wo := &nomadapi.WriteOptions{Namespace: *job.Namespace}
			v, _, err := cluster.Nomad.Jobs().Validate(job, wo)
			if err != nil {
				t.Fatalf("validate: %v", err)
			}
			if v.Error != "" || len(v.ValidationErrors) > 0 {
				t.Fatalf("validate: %s %q", v.Error, v.ValidationErrors)
			}
			if v.Warnings != "" {
				t.Errorf("validate warnings: %s", v.Warnings)
			}
			p, _, err := cluster.Nomad.Jobs().Plan(job, true, wo)
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			if p.Warnings != "" {
				t.Errorf("plan warnings: %s", p.Warnings)
			}
			if p.Diff == nil || p.Diff.Type != "Added" {
				t.Errorf("plan diff: %+v", p.Diff)
			}
			// Placement depends on the node (no docker, no node.class = edge on a dev
			// agent); only raw_exec must place here.
			for tg, m := range p.FailedTGAllocs {
				msg := fmt.Sprintf("group %s not placeable on the dev agent: constraints filtered %v, exhausted %v",
					tg, m.ConstraintFiltered, m.DimensionExhausted)
				if job.TaskGroups[0].Tasks[0].Driver == "raw_exec" && len(job.Constraints) == 0 {
					t.Error(msg)
				} else {
					t.Log(msg)
				}
			}
		})
	}
}

// TestRevisionServes runs a compiled revision of examples/hello on Nomad and checks the
// contract the gateway and scaler rely on: the Consul service named after the revision with
// rouse's tags and a passing readiness check, $PORT and ROUSE_REVISION reaching the app,
// and Jobs.Scale never blocked by a deployment.
func TestRevisionServes(t *testing.T) {
	bin, err := cluster.GoBuild("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`service "hello" {
  command = %q
  env     = { TARGET = "rouse" }
  timeout = "10s"
  readiness {
    path = "/healthz"
  }
  autoscaling {
    initial = 1
  }
}
`, bin)
	s, diags := jobspec.Parse(map[string][]byte{"hello.hcl": []byte(src)}, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	job, _, err := jobspec.Compile(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	rev := *job.ID
	if _, _, err := cluster.Nomad.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	t.Cleanup(func() { _, _, _ = cluster.Nomad.Jobs().Deregister(rev, true, nil) })

	entries := waitPassing(t, rev, 1)
	e := entries[0]
	tags := strings.Join(e.Service.Tags, ",")
	if tags != revmeta.TagRouse+","+revmeta.TagServicePrefix+"hello,"+revmeta.TagNamespacePrefix+"default" {
		t.Errorf("tags %s", tags)
	}
	if got := e.Service.Meta[revmeta.MetaReadinessPath]; got != "/healthz" {
		t.Errorf("service meta %s = %q, want the readiness path", revmeta.MetaReadinessPath, got)
	}
	url := fmt.Sprintf("http://%s:%d/", serviceAddr(e), e.Service.Port)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(body)); got != "Hello rouse!" || resp.Header.Get("X-Revision") != rev {
		t.Errorf("GET %s = %q, X-Revision %q", url, got, resp.Header.Get("X-Revision"))
	}

	// No deployment, so scaling is never refused (nomad#8143).
	for _, n := range []int{2, 0} {
		if _, _, err := cluster.Nomad.Jobs().Scale(rev, revmeta.Group, &n, "test", false, nil, nil); err != nil {
			t.Fatalf("scale to %d: %v", n, err)
		}
		waitPassing(t, rev, n)
	}
	deps, _, err := cluster.Nomad.Jobs().Deployments(rev, false, nil)
	if err != nil || len(deps) != 0 {
		t.Errorf("deployments %v %v: revisions must not create any", deps, err)
	}
}

// waitPassing polls Consul until exactly n instances of service pass their checks.
func waitPassing(t *testing.T, service string, n int) []*consulapi.ServiceEntry {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last []*consulapi.ServiceEntry
	var idx uint64
	for time.Now().Before(deadline) {
		entries, meta, err := cluster.Consul.Health().Service(service, "", true,
			&consulapi.QueryOptions{WaitIndex: idx, WaitTime: 2 * time.Second})
		if err == nil {
			last, idx = entries, meta.LastIndex
			if len(entries) == n {
				return entries
			}
		} else {
			time.Sleep(100 * time.Millisecond) // agent briefly unavailable: back off a little
		}
	}
	t.Fatalf("service %s: %d passing instances after 60s, want %d", service, len(last), n)
	return nil
}

func serviceAddr(e *consulapi.ServiceEntry) string {
	if e.Service.Address != "" {
		return e.Service.Address
	}
	return e.Node.Address
}
