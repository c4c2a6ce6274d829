package registry

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// staticBin builds examples/hello statically once for the test.
func staticBin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "hello")
	if err := BuildStatic("./examples/hello", out); err != nil {
		t.Fatal(err)
	}
	return out
}

func startRegistry(t *testing.T, o Options) *Registry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := StartWith(ctx, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pid := r.PID()
		r.Stop()
		if ok, _ := r.proc.Exited(); !ok {
			t.Errorf("registry pid %d still running after Stop", pid)
		}
	})
	return r
}

// A pushed image is on the registry under its digest, with the binary as /app (0755),
// and reads back the same through the registry's API.
func TestPushAndReadBack(t *testing.T) {
	bin := staticBin(t)
	r := startRegistry(t, Options{})
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") {
		t.Fatalf("Addr %q", r.Addr)
	}
	ctx := context.Background()
	ref, err := r.Push(ctx, "hello:v1", Image{Binary: bin, Env: []string{"PORT=8080"}, Files: map[string][]byte{"/etc/motd": []byte("hi\n")}})
	if err != nil {
		t.Fatal(err)
	}
	if ref.Tag != r.Addr+"/hello:v1" || !strings.HasPrefix(ref.Digest, "sha256:") || ref.Pinned != r.Addr+"/hello@"+ref.Digest {
		t.Fatalf("ref %+v", ref)
	}

	tag, _ := name.NewTag(ref.Tag)
	desc, err := remote.Head(tag, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != ref.Digest {
		t.Fatalf("HEAD %s: digest %s, pushed %s", ref.Tag, desc.Digest, ref.Digest)
	}

	pinned, _ := name.NewDigest(ref.Pinned)
	img, err := remote.Image(pinned, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || strings.Join(cf.Config.Entrypoint, " ") != "/app" ||
		strings.Join(cf.Config.Env, " ") != "PORT=8080" {
		t.Fatalf("config: os %s arch %s entrypoint %q env %q", cf.OS, cf.Architecture, cf.Config.Entrypoint, cf.Config.Env)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want, _ := os.ReadFile(bin)
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = h.FileInfo().Mode().String()
		switch h.Name {
		case "app":
			if h.Mode != 0o755 || string(b) != string(want) {
				t.Errorf("/app: mode %o, %d bytes (want 0755, %d bytes of the binary)", h.Mode, len(b), len(want))
			}
		case "etc/motd":
			if string(b) != "hi\n" {
				t.Errorf("/etc/motd: %q", b)
			}
		}
		if !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: mtime %s, want the epoch", h.Name, h.ModTime)
		}
	}
	if _, ok := files["app"]; !ok || files["etc/"] == "" || files["etc/motd"] == "" {
		t.Fatalf("layer holds %v", files)
	}
}

// The same content gives the same digest; other content under the same tag moves the tag
// to a new digest.
func TestDigestFollowsContent(t *testing.T) {
	bin := staticBin(t)
	r := startRegistry(t, Options{})
	ctx := context.Background()
	a, err := r.Push(ctx, "app:latest", Image{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.Push(ctx, "app", Image{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if again != a {
		t.Fatalf("same content pushed twice: %+v then %+v", a, again)
	}
	b, err := r.Push(ctx, "app:latest", Image{Binary: bin, Env: []string{"TARGET=other"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Digest == a.Digest {
		t.Fatalf("different content, same digest %s", a.Digest)
	}
	c, err := r.Push(ctx, "app:latest", Image{Binary: bin, Files: map[string][]byte{"/data": []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest == a.Digest || c.Digest == b.Digest {
		t.Fatalf("another layer, same digest %s", c.Digest)
	}
	tag, _ := name.NewTag(c.Tag)
	desc, err := remote.Head(tag)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != c.Digest {
		t.Fatalf("tag %s names %s, last push was %s", c.Tag, desc.Digest, c.Digest)
	}
	// The first image is still there by digest.
	if _, err := remote.Head(mustDigest(t, a.Pinned)); err != nil {
		t.Fatalf("first image gone: %v", err)
	}
}

func mustDigest(t *testing.T, s string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A registry with a user refuses anonymous and wrong-password clients with 401 and
// accepts the right password.
func TestAuthRefusesWrongCredentials(t *testing.T) {
	bin := staticBin(t)
	r := startRegistry(t, Options{User: "rouse", Password: "s3cret"})
	ctx := context.Background()

	resp, err := http.Get("http://" + r.Addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v2/: %d, want 401", resp.StatusCode)
	}

	for _, c := range []struct {
		who    string
		client *Registry
	}{
		{"anonymous", &Registry{Addr: r.Addr}},
		{"wrong password", &Registry{Addr: r.Addr, User: "rouse", Password: "guess"}},
		{"unknown user", &Registry{Addr: r.Addr, User: "mallory", Password: "s3cret"}},
	} {
		_, err := c.client.Push(ctx, "private:v1", Image{Binary: bin})
		if !is401(err) {
			t.Errorf("%s push: want 401, got %v", c.who, err)
		}
	}

	ref, err := r.Push(ctx, "private:v1", Image{Binary: bin})
	if err != nil {
		t.Fatalf("push with the right password: %v", err)
	}
	tag, _ := name.NewTag(ref.Tag)
	if _, err := remote.Head(tag, remote.WithAuth(authn.Anonymous)); !is401(err) {
		t.Errorf("anonymous HEAD: want 401, got %v", err)
	}
	if _, err := remote.Head(tag, remote.WithAuth(&authn.Basic{Username: "rouse", Password: "guess"})); !is401(err) {
		t.Errorf("wrong-password HEAD: want 401, got %v", err)
	}
	desc, err := remote.Head(tag, remote.WithAuth(r.Auth()))
	if err != nil || desc.Digest.String() != ref.Digest {
		t.Fatalf("HEAD with the right password: %v, %v", desc, err)
	}
}

func is401(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusUnauthorized
}

// A missing server binary is an error that says how to get it.
func TestMissingBinarySaysMakeDocker(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := findBin(filepath.Join(t.TempDir(), "docker-registry"))
	if err == nil || !strings.Contains(err.Error(), "run `make docker`") {
		t.Fatalf("want an error naming `make docker`, got %v", err)
	}
}
