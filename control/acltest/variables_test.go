// Package acltest runs control's apply of templates against Nomad and Consul with ACLs on
// (default deny), where Nomad enforces what a revision's workload identity may read.
package acltest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/harness/testcluster"
	"github.com/rouse-run/rouse/jobspec"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(testcluster.Run(m, testcluster.Options{ACL: true}, &cluster)) }

// TestTemplateVariablesUnderACLs: with ACLs on, Nomad's implicit workload policy does not
// cover nomad/jobs/<service> (a revision's job ID is <service>-NNNNN), so without a policy
// the apply fails in seconds naming the variable, not with an instance pending until
// --wait; with the namespace policy docs/spec.md gives, the same apply serves the value.
func TestTemplateVariablesUnderACLs(t *testing.T) {
	bin, err := cluster.GoBuild("./control/testdata/probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cluster.Nomad.Variables().Create(&nomadapi.Variable{Namespace: "default", Path: "nomad/jobs/aclvars/db",
		Items: map[string]string{"password": "pw-acl"}}, nil); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`service "aclvars" {
  command = %q
  readiness {
    path = "/healthz"
  }
  template {
    destination = "secrets/db.env"
    env         = true
    data        = "DB_PASSWORD={{ with nomadVar \"nomad/jobs/aclvars/db\" }}{{ .password }}{{ end }}"
  }
}
`, bin)
	s, diags := jobspec.Parse(map[string][]byte{"aclvars.hcl": []byte(src)}, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	c := control.New(control.Config{Nomad: cluster.Nomad, Consul: cluster.Consul, NomadAddr: cluster.NomadAddr,
		ConsulAddr: "http://" + cluster.ConsulAddr, NomadToken: true, ConsulToken: true, GatewayWait: -1})
	apply := func() (*control.ApplyResult, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		res, err := c.Apply(ctx, control.ApplyOptions{Spec: s, Keep: control.DefaultKeep, Wait: time.Minute})
		return res, time.Since(start), err
	}

	_, took, err := apply()
	t.Logf("apply without a policy: %s: %v", took.Round(time.Millisecond), err)
	var rf *control.RevisionFailedError
	if !errors.As(err, &rf) || !strings.Contains(rf.Reason, "nomad/jobs/aclvars/db") {
		t.Fatalf("apply without a policy: %v, want a failure naming the variable", err)
	}
	if took > 30*time.Second {
		t.Errorf("failed after %s", took)
	}

	// The one-time namespace policy of docs/spec.md (no job: every workload of the namespace).
	if _, err := cluster.Nomad.ACLPolicies().Upsert(&nomadapi.ACLPolicy{
		Name:   "rouse-variables",
		Rules:  `namespace "default" { variables { path "nomad/jobs/*" { capabilities = ["read", "list"] } } }`,
		JobACL: &nomadapi.JobACL{Namespace: "default"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	res, took, err := apply()
	t.Logf("apply with the policy: %s: %v", took.Round(time.Millisecond), err)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.Delete(context.Background(), "default", "aclvars", time.Minute, nil) })
	e := cluster.WaitPassing(t, res.Revision, 1)[0]
	resp, err := http.Get("http://" + net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)) + "/env?name=DB_PASSWORD")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "pw-acl" {
		t.Errorf("$DB_PASSWORD = %q", b)
	}
}
