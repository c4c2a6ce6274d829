package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
	"github.com/rouse-run/rouse/internal/harness/registry"
	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
	"github.com/rouse-run/rouse/jobspec"
)

// Images applied for real: a docker-registry on loopback, Nomad's docker driver on the
// machine's dockerd, Consul. What they prove: a revision runs the digest its tag named at
// apply, whatever the tag names later; a bad image fails the apply in seconds with the
// registry's or the task's own words and the route untouched; initial = 0 starts nothing.

// agentClient is a control client of the package's cluster. No gateway runs here, so
// route changes do not wait for one.
func agentClient() *Client {
	return New(Config{Nomad: cluster.Nomad, Consul: cluster.Consul, NomadAddr: cluster.NomadAddr,
		ConsulAddr: "http://" + cluster.ConsulAddr, GatewayWait: -1})
}

// pushHello pushes examples/hello as repo:tag, saying "Hello <target>!".
func pushHello(t *testing.T, reg *registry.Registry, repoTag, target string) registry.Ref {
	t.Helper()
	bin, err := cluster.GoBuildStatic("./examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := reg.Push(context.Background(), repoTag, registry.Image{Binary: bin, Env: []string{"TARGET=" + target}})
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func testRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg, err := cluster.Registry(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// parseSpec parses an image service spec; extra goes inside the service block.
func parseSpec(t *testing.T, svc, image, extra string) *jobspec.Spec {
	t.Helper()
	src := fmt.Sprintf(`service %q {
  image = %q
  resources {
    cpu    = 50
    memory = 32
  }
  readiness { path = "/healthz" }
%s
}
`, svc, image, extra)
	s, diags := jobspec.Parse(map[string][]byte{svc + ".hcl": []byte(src)}, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return s
}

func apply(t *testing.T, c *Client, s *jobspec.Spec) (*ApplyResult, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := c.Apply(ctx, ApplyOptions{Spec: s, Keep: DefaultKeep, Wait: time.Minute})
	took := time.Since(start)
	t.Logf("apply %s (%s): %s, %v", s.Name, s.Image, took.Round(time.Millisecond), err)
	return res, took, err
}

func mustApply(t *testing.T, c *Client, s *jobspec.Spec) *ApplyResult {
	t.Helper()
	res, _, err := apply(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func jobImage(t *testing.T, rev string) (*nomadapi.Job, string) {
	t.Helper()
	job, _, err := cluster.Nomad.Jobs().Info(rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := job.TaskGroups[0].Tasks[0].Config["image"].(string)
	return job, img
}

// answers GETs / from every passing instance of rev and returns their bodies, once
// Consul lists n of them.
func answers(t *testing.T, rev string, n int) []string {
	t.Helper()
	es := cluster.WaitPassing(t, rev, n)
	var out []string
	for _, e := range es {
		addr := net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port))
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("instance %s of %s: %v", addr, rev, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, strings.TrimSpace(string(b)))
	}
	return out
}

func serviceRecord(t *testing.T, svc string) *store.Service {
	t.Helper()
	rec, err := store.New(cluster.Consul).GetService(context.Background(), "default", svc)
	if err != nil || rec == nil {
		t.Fatalf("record of %s: %v %v", svc, rec, err)
	}
	return rec
}

func wantRouteTo(t *testing.T, svc, rev string) {
	t.Helper()
	rec := serviceRecord(t, svc)
	if len(rec.Route) != 1 || rec.Route[0].Revision != rev || rec.Route[0].Percent != 100 {
		t.Fatalf("route of %s: %+v, want 100%% to %s", svc, rec.Route, rev)
	}
}

func revisionNames(t *testing.T, svc string) []string {
	t.Helper()
	jobs, err := agentClient().revisionJobs(context.Background(), "default", svc)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, j := range byGeneration(jobs) {
		out = append(out, j.Name)
	}
	return out
}

func deleteService(t *testing.T, svc string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := agentClient().Delete(ctx, "default", svc, time.Minute, nil); err != nil {
		t.Errorf("delete %s: %v", svc, err)
	}
}

// TestImagePinnedToDigest: apply resolves the tag and the revision runs the digest. The
// tag is then re-pushed with other content and the node's copy of the old content is
// untagged, so any instance started by tag would pull the new content: the old revision
// scaled out to 2 still serves the old content on both. Re-applying the same spec makes a
// new revision serving the new content; applying once more is "unchanged".
func TestImagePinnedToDigest(t *testing.T) {
	reg := testRegistry(t)
	c := agentClient()
	a := pushHello(t, reg, "pin:v1", "A")
	s := parseSpec(t, "pin", a.Tag, "")

	res1 := mustApply(t, c, s)
	if res1.Outcome != OutcomeCreated || res1.ImageDigest != a.Digest || res1.Image != a.Tag {
		t.Fatalf("first apply: %+v", res1)
	}
	job, img := jobImage(t, res1.Revision)
	if img != a.Pinned {
		t.Fatalf("job %s runs %q, want %q", res1.Revision, img, a.Pinned)
	}
	if job.Meta[revmeta.KeyImage] != a.Tag || job.Meta[revmeta.KeyImageDigest] != a.Digest {
		t.Fatalf("meta: %v", job.Meta)
	}
	if got := answers(t, res1.Revision, 1); got[0] != "Hello A!" {
		t.Fatalf("%s answers %q", res1.Revision, got)
	}

	b := pushHello(t, reg, "pin:v1", "B")
	if b.Digest == a.Digest {
		t.Fatal("content B has content A's digest")
	}
	untagLocal(t, reg.Addr+"/pin")

	// The scaler's call, on the old revision: its new instance runs A too.
	if _, _, err := cluster.Nomad.Jobs().Scale(res1.Revision, revmeta.Group, ptr(2), "test: scale out after the tag moved", false, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, got := range answers(t, res1.Revision, 2) {
		if got != "Hello A!" {
			t.Fatalf("after the tag moved, an instance of %s answers %q: the revision did not keep its content", res1.Revision, got)
		}
	}

	res2 := mustApply(t, c, s)
	if res2.Outcome != OutcomeCreated || res2.Revision == res1.Revision || res2.ImageDigest != b.Digest {
		t.Fatalf("re-apply after the tag moved: %+v (first %s)", res2, res1.Revision)
	}
	if _, img := jobImage(t, res2.Revision); img != b.Pinned {
		t.Fatalf("job %s runs %q, want %q", res2.Revision, img, b.Pinned)
	}
	if got := answers(t, res2.Revision, 1); got[0] != "Hello B!" {
		t.Fatalf("%s answers %q", res2.Revision, got)
	}
	wantRouteTo(t, "pin", res2.Revision)

	res3 := mustApply(t, c, s)
	if res3.Outcome != OutcomeUnchanged || res3.Revision != res2.Revision {
		t.Fatalf("third apply: %+v", res3)
	}

	// describe/revisions carry the tag and the digest of each revision.
	revs, err := c.Revisions(context.Background(), "default", "pin")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]RevisionInfo{}
	for _, r := range revs {
		byName[r.Name] = r
	}
	if r := byName[res1.Revision]; r.Image != a.Tag || r.ImageDigest != a.Digest {
		t.Errorf("revision info %+v", r)
	}
	if r := byName[res2.Revision]; r.Image != a.Tag || r.ImageDigest != b.Digest {
		t.Errorf("revision info %+v", r)
	}
	deleteService(t, "pin")
}

// untagLocal removes the node's references to images under prefix (forced: a running
// container may use them; its image stays, untagged), so that a new instance finds
// nothing local and pulls what its job names.
func untagLocal(t *testing.T, prefix string) {
	t.Helper()
	d := agents.NewDocker()
	ims, err := d.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, im := range ims {
		for _, ref := range append(append([]string{}, im.RepoTags...), im.RepoDigests...) {
			if !strings.HasPrefix(ref, prefix) {
				continue
			}
			if err := d.Do(context.Background(), http.MethodDelete, "/images/"+ref+"?force=true", nil, nil); err != nil && !agents.IsDockerNotFound(err) {
				t.Fatalf("untag %s: %v", ref, err)
			}
			removed = append(removed, ref)
		}
	}
	if len(removed) == 0 {
		t.Fatalf("the node has no image under %s to untag", prefix)
	}
	t.Logf("untagged on the node: %v", removed)
}

// TestBadImagesFailFast: each bad image fails apply within seconds, with the registry's or
// the task's reason; nothing is registered for a tag that cannot be resolved, and the
// route keeps serving the previous revision.
func TestBadImagesFailFast(t *testing.T) {
	reg := testRegistry(t)
	c := agentClient()
	good := pushHello(t, reg, "bad:v1", "good")
	res := mustApply(t, c, parseSpec(t, "bad", good.Tag, ""))
	serving := res.Revision

	// A registry that wants credentials this machine does not have.
	locked, err := registry.StartWith(context.Background(), filepath.Join(t.TempDir(), "locked"), registry.Options{User: "rouse", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer locked.Stop()
	pushHello(t, locked, "bad:v1", "locked")
	t.Setenv("DOCKER_CONFIG", t.TempDir())

	boomBin, err := cluster.GoBuildStatic("./control/testdata/boom")
	if err != nil {
		t.Fatal(err)
	}
	boom, err := reg.Push(context.Background(), "boom:v1", registry.Image{Binary: boomBin})
	if err != nil {
		t.Fatal(err)
	}

	const bound = 10 * time.Second
	for _, tc := range []struct {
		name, image string
		want        []string
		registers   bool // a revision job is registered (and stopped) for it
	}{
		// docker-registry answers an unknown repository as an unknown manifest (its
		// filesystem storage does not tell the two apart); the words are the registry's.
		{"unknown repository", reg.Addr + "/nobody:v1", []string{"MANIFEST_UNKNOWN: manifest unknown"}, false},
		{"unknown tag", reg.Addr + "/bad:v2", []string{"MANIFEST_UNKNOWN: manifest unknown"}, false},
		{"registry unreachable", closedAddr(t) + "/bad:v1", []string{"connection refused"}, false},
		{"credentials refused", locked.Addr + "/bad:v1", []string{"UNAUTHORIZED", "docker login"}, false},
		{"process exits at once", boom.Tag, []string{"Terminated: Exit Code: 3", "stderr: boom: config missing"}, true},
		// Not resolved, so Nomad's docker driver is the one that finds the tag missing.
		{"unknown tag, not resolved", reg.Addr + "/bad:v3", []string{"Driver Failure", "manifest unknown"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := revisionNames(t, "bad")
			s := parseSpec(t, "bad", tc.image, "")
			s.ResolveImage = !strings.HasSuffix(tc.name, "not resolved")
			_, took, err := apply(t, c, s)
			if err == nil {
				t.Fatal("apply succeeded")
			}
			text := err.Error()
			var rf *RevisionFailedError
			var ie *ImageError
			if tc.registers != errors.As(err, &rf) || tc.registers == errors.As(err, &ie) {
				t.Errorf("error %T: %v", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("error lacks %q:\n%s", w, text)
				}
			}
			if took > bound {
				t.Errorf("apply took %s to fail, want ≤ %s", took, bound)
			}
			after := revisionNames(t, "bad")
			if !tc.registers && len(after) != len(before) {
				t.Errorf("a revision was registered for an image that does not resolve: %v → %v", before, after)
			}
			wantRouteTo(t, "bad", serving)
			if got := answers(t, serving, 1); got[0] != "Hello good!" {
				t.Errorf("%s answers %q", serving, got)
			}
		})
	}
	deleteService(t, "bad")
}

// TestInitialZero: initial = 0 (min defaults to 0) registers the revision at count 0,
// routes it and returns without starting an instance; Nomad's plan still runs.
func TestInitialZero(t *testing.T) {
	reg := testRegistry(t)
	c := agentClient()
	ref := pushHello(t, reg, "zero:v1", "zero")
	s := parseSpec(t, "zero", ref.Tag, "  autoscaling {\n    initial = 0\n  }")

	res, took, err := apply(t, c, s)
	if err != nil {
		t.Fatal(err)
	}
	if !res.AtZero || res.Outcome != OutcomeCreated {
		t.Fatalf("apply: %+v", res)
	}
	// Resolve, plan, register, write: no instance to wait for.
	if took > time.Second {
		t.Errorf("apply at zero took %s", took)
	}
	job, img := jobImage(t, res.Revision)
	if *job.TaskGroups[0].Count != 0 || img != ref.Pinned {
		t.Fatalf("job count %d image %s", *job.TaskGroups[0].Count, img)
	}
	wantRouteTo(t, "zero", res.Revision)
	// Nothing is placed: once Nomad has finished evaluating the registration, the
	// revision has no allocation.
	poll.Until(t, 30*time.Second, "the evaluations of "+res.Revision+" to complete", func() error {
		evs, _, err := cluster.Nomad.Jobs().Evaluations(res.Revision, nil)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return errors.New("no evaluation yet")
		}
		for _, ev := range evs {
			if ev.Status != nomadapi.EvalStatusComplete {
				return fmt.Errorf("evaluation %s is %s", ev.ID, ev.Status)
			}
		}
		return nil
	})
	allocs, _, err := cluster.Nomad.Jobs().Allocations(res.Revision, true, nil)
	if err != nil || len(allocs) != 0 {
		t.Fatalf("allocations of a revision at zero: %d %v", len(allocs), err)
	}
	es, _, err := cluster.Consul.Health().Service(res.Revision, "", false, (&consulapi.QueryOptions{}))
	if err != nil || len(es) != 0 {
		t.Fatalf("instances in Consul: %d %v", len(es), err)
	}

	// What the scaler does on the first request: the revision runs and answers.
	if _, _, err := cluster.Nomad.Jobs().Scale(res.Revision, revmeta.Group, ptr(1), "test: wake", false, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := answers(t, res.Revision, 1); got[0] != "Hello zero!" {
		t.Fatalf("woken %s answers %q", res.Revision, got)
	}

	// Unchanged spec: unchanged, whatever the count is now.
	if res, _, err := apply(t, c, s); err != nil || res.Outcome != OutcomeUnchanged {
		t.Fatalf("re-apply: %+v %v", res, err)
	}

	// Detached, a revision at zero is registered at zero and not routed; the next apply
	// picks it up and routes it, still without starting an instance.
	s2 := parseSpec(t, "zero", ref.Tag, "  env = { V = \"2\" }\n  autoscaling {\n    initial = 0\n  }")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	det, err := c.Apply(ctx, ApplyOptions{Spec: s2, Detach: true, Keep: DefaultKeep})
	if err != nil || det.Outcome != OutcomeDetached {
		t.Fatalf("detach: %+v %v", det, err)
	}
	if job, _ := jobImage(t, det.Revision); *job.TaskGroups[0].Count != 0 {
		t.Fatalf("detached revision at count %d", *job.TaskGroups[0].Count)
	}
	wantRouteTo(t, "zero", res.Revision)
	again, _, err := apply(t, c, s2)
	if err != nil || again.Outcome != OutcomeReused || again.Revision != det.Revision || !again.AtZero {
		t.Fatalf("apply after detach: %+v %v", again, err)
	}
	wantRouteTo(t, "zero", det.Revision)
	if allocs, _, err := cluster.Nomad.Jobs().Allocations(det.Revision, true, nil); err != nil || len(allocs) != 0 {
		t.Fatalf("allocations of %s: %d %v", det.Revision, len(allocs), err)
	}
	deleteService(t, "zero")
}

// TestInitialZeroFailsAtApply: a revision that starts at zero is still checked at apply:
// its tag must resolve, and Nomad's plan must place an instance; neither failure
// registers anything.
func TestInitialZeroFailsAtApply(t *testing.T) {
	reg := testRegistry(t)
	c := agentClient()
	zero := "  autoscaling {\n    initial = 0\n  }"

	_, took, err := apply(t, c, parseSpec(t, "zerobad", reg.Addr+"/zerobad:nope", zero))
	var ie *ImageError
	if !errors.As(err, &ie) || ie.Kind != ImageNotFound || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Fatalf("unknown tag at zero: %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("took %s", took)
	}

	ref := pushHello(t, reg, "zerobad:v1", "x")
	_, _, err = apply(t, c, parseSpec(t, "zerobad", ref.Tag, zero+"\n  constraint {\n    attribute = \"${node.class}\"\n    value     = \"no-such-class\"\n  }"))
	var pe *PlacementError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "no node can run it") || !strings.Contains(err.Error(), "nothing was registered") {
		t.Fatalf("unplaceable at zero: %v", err)
	}
	if names := revisionNames(t, "zerobad"); len(names) != 0 {
		t.Fatalf("registered: %v", names)
	}
	if rec, err := store.New(cluster.Consul).GetService(context.Background(), "default", "zerobad"); err != nil || (rec != nil && rec.Generation != 0) {
		t.Fatalf("record after failed applies: %+v %v", rec, err)
	}
}
