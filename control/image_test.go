package control

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/rouse-run/rouse/jobspec"
)

// The pure logic of tag resolution against go-containerregistry's in-process registry:
// which digest, which error, which words. The proof against a real docker-registry, Nomad
// and dockerd is in image_agent_test.go.

// inProcessRegistry serves a registry on loopback; with user set it demands basic auth, as
// docker-registry's htpasswd does.
func inProcessRegistry(t *testing.T, user, pass string) string {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}`)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// pushRandom pushes a random image to ref and returns its digest.
func pushRandom(t *testing.T, ref string, opts ...remote.Option) string {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func imageSpec(t *testing.T, image string) *jobspec.Spec {
	t.Helper()
	s, diags := jobspec.Parse(map[string][]byte{"s.hcl": []byte(fmt.Sprintf("service \"hi\" {\n  image = %q\n}\n", image))}, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return s
}

func TestResolveImage(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials of the machine running the test
	reg := inProcessRegistry(t, "", "")
	c := New(Config{})
	ctx := context.Background()

	a := pushRandom(t, reg+"/hi:1")
	s := imageSpec(t, reg+"/hi:1")
	got, warn, err := c.resolveImage(ctx, s, nil)
	if err != nil || warn != "" || got.ImageDigest != a {
		t.Fatalf("resolve: %+v %q %v; want %s", got, warn, err, a)
	}
	if s.ImageDigest != "" {
		t.Fatal("resolveImage changed the caller's spec")
	}
	if img, _ := got.RunImage(); img != reg+"/hi@"+a {
		t.Fatalf("runs %s", img)
	}
	hashA := got.TemplateHash()
	again, _, _ := c.resolveImage(ctx, s, nil)
	if again.TemplateHash() != hashA {
		t.Fatal("same content, different template")
	}

	// The tag moves: the same spec is another template.
	b := pushRandom(t, reg+"/hi:1")
	got, _, err = c.resolveImage(ctx, s, nil)
	if err != nil || got.ImageDigest != b || b == a || got.TemplateHash() == hashA {
		t.Fatalf("after re-push: %+v %v (a %s b %s)", got, err, a, b)
	}

	// Given by digest: used as is, without asking the registry (here: one that is gone).
	dead := closedAddr(t)
	s = imageSpec(t, dead+"/hi@"+a)
	if got, warn, err := c.resolveImage(ctx, s, nil); err != nil || warn != "" || got != s {
		t.Fatalf("digest reference: %+v %q %v", got, warn, err)
	}

	// resolve_image = false: the tag as written, with a warning that it follows the tag.
	s = imageSpec(t, dead+"/hi:1")
	s.ResolveImage = false
	got, warn, err = c.resolveImage(ctx, s, nil)
	if err != nil || got.ImageDigest != "" || !strings.Contains(warn, "follows the tag") {
		t.Fatalf("not resolved: %+v %q %v", got, warn, err)
	}

	// A command has no image.
	cmd, diags := jobspec.Parse(map[string][]byte{"s.hcl": []byte("service \"c\" {\n  command = \"/bin/c\"\n}\n")}, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if got, warn, err := c.resolveImage(ctx, cmd, nil); err != nil || warn != "" || got != cmd {
		t.Fatalf("command: %+v %q %v", got, warn, err)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestResolveImageFailures: each way a tag cannot be resolved is an *ImageError, fast, with
// the registry's own reason.
func TestResolveImageFailures(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	open := inProcessRegistry(t, "", "")
	pushRandom(t, open+"/hi:1")
	locked := inProcessRegistry(t, "rouse", "s3cret")
	c := New(Config{})

	for _, tc := range []struct {
		name, image, kind string
		want              []string
	}{
		{"unknown tag", open + "/hi:nope", ImageNotFound, []string{"MANIFEST_UNKNOWN"}},
		{"unknown repository", open + "/nobody:1", ImageNotFound, []string{"NAME_UNKNOWN"}},
		{"unreachable", closedAddr(t) + "/hi:1", ImageUnreachable, []string{"connection refused", "resolve_image = false", "--no-resolve-image"}},
		{"credentials refused", locked + "/hi:1", ImageUnauthorized, []string{"UNAUTHORIZED", "authentication required", "docker login " + locked}},
		{"runtime reference", "", ImageInvalid, []string{"resolve_image = false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := imageSpec(t, open+"/hi:1")
			s.Image = tc.image
			if tc.image == "" {
				s.Image = open + "/hi:${NOMAD_META_tag}"
			}
			start := time.Now()
			_, _, err := c.resolveImage(context.Background(), s, nil)
			took := time.Since(start)
			var ie *ImageError
			if !errors.As(err, &ie) || ie.Kind != tc.kind {
				t.Fatalf("err %v (%T), want an ImageError of kind %q", err, err, tc.kind)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
			if took > 3*time.Second {
				t.Errorf("took %s", took)
			}
			t.Logf("%s in %s: %v", tc.name, took.Round(time.Millisecond), err)
		})
	}
}

// TestResolveImageCredentials: rouse's resolution uses docker's config.json from
// DOCKER_CONFIG, as `docker login` writes it.
func TestResolveImageCredentials(t *testing.T) {
	locked := inProcessRegistry(t, "rouse", "s3cret")
	auth := remote.WithAuth(&authn.Basic{Username: "rouse", Password: "s3cret"})
	d := pushRandom(t, locked+"/hi:1", auth)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, locked, base64.StdEncoding.EncodeToString([]byte("rouse:s3cret")))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	got, _, err := New(Config{}).resolveImage(context.Background(), imageSpec(t, locked+"/hi:1"), nil)
	if err != nil || got.ImageDigest != d {
		t.Fatalf("%+v %v, want %s", got, err, d)
	}
}

// TestImageErrorText: the registry's words are kept, and each kind says what to do.
func TestImageErrorText(t *testing.T) {
	u, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:5000/v2/hi/manifests/2", nil)
	for _, tc := range []struct {
		err        error
		kind, want string
	}{
		{&transport.Error{StatusCode: 404, Request: u, Errors: []transport.Diagnostic{{Code: "MANIFEST_UNKNOWN", Message: "manifest unknown", Detail: map[string]string{"Tag": "2"}}}},
			ImageNotFound, "image 127.0.0.1:5000/hi:2: cannot resolve it to a digest: MANIFEST_UNKNOWN: manifest unknown"},
		{&transport.Error{StatusCode: 401, Request: u}, ImageUnauthorized, "HTTP 401 Unauthorized (rouse uses the registry credentials of this machine"},
		{&transport.Error{StatusCode: 403, Errors: []transport.Diagnostic{{Code: "DENIED", Message: "requested access to the resource is denied"}}},
			ImageUnauthorized, "DENIED: requested access to the resource is denied"},
		{fmt.Errorf("Get %q: %w", "http://127.0.0.1:5000/v2/", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}),
			ImageUnreachable, "dial tcp: connect: connection refused (if only the Nomad clients"},
		{context.DeadlineExceeded, ImageUnreachable, "did not answer within 10s"},
		{&transport.Error{StatusCode: 500, Errors: []transport.Diagnostic{{Code: "UNKNOWN", Message: "boom"}}}, ImageFailed, "UNKNOWN: boom"},
	} {
		e := imageError("127.0.0.1:5000/hi:2", tc.err)
		if e.Kind != tc.kind || !strings.Contains(e.Error(), tc.want) {
			t.Errorf("%v → %s %q; want %s with %q", tc.err, e.Kind, e.Error(), tc.kind, tc.want)
		}
	}
}
