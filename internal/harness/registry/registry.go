// Package registry runs a real image registry (Debian's docker-registry, the CNCF
// distribution server) on a free loopback port for tests and `make dev-image`, and builds
// and pushes small images to it in Go with go-containerregistry: no `docker build`, no
// base image, nothing pulled from outside. An image is one layer holding a static binary
// at /app; the same content always gives the same digest.
package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/bcrypt"

	"github.com/rouse-run/rouse/internal/harness/agents"
)

// missingHint says how to get the registry binary.
const missingHint = "run `make docker` (installs the docker-registry package)"

// debianBin is where the docker-registry package installs the server.
const debianBin = "/usr/bin/docker-registry"

// Options configure a registry.
type Options struct {
	// User and Password, when User is set, turn on htpasswd basic auth: anonymous and
	// wrong-password requests get 401.
	User, Password string
}

// Registry is a running registry, or (with only Addr, and User/Password when it has auth)
// a client of one started elsewhere: Push needs nothing else.
type Registry struct {
	Addr           string // 127.0.0.1:port
	Dir            string // config, log and storage
	User, Password string

	proc *agents.Process
}

// Start runs a registry without auth whose config, log and storage live in dir.
func Start(ctx context.Context, dir string) (*Registry, error) {
	return StartWith(ctx, dir, Options{})
}

// StartWith runs `docker-registry serve` on a free 127.0.0.1 port with config, log
// (registry.log) and storage (data/) in dir, and waits until GET /v2/ answers 200.
func StartWith(ctx context.Context, dir string, o Options) (*Registry, error) {
	bin, err := findBin(debianBin)
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	auth := ""
	if o.User != "" {
		// The minimum cost: the registry checks the hash on every request, and this is a
		// test registry on loopback.
		h, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(o.User+":"+string(h)+"\n"), 0o600); err != nil {
			return nil, err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: rouse\n    path: %s\n", pw)
	}
	return agents.RetryBind(func() (*Registry, error) { return start(ctx, bin, dir, auth, o) })
}

func start(ctx context.Context, bin, dir, auth string, o Options) (*Registry, error) {
	ports, err := agents.FreePorts(1)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	// Deletes on so a test can remove what it pushed; no upload purging (a background
	// job that only matters for long-lived registries); no health checks of the storage.
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
%s`, filepath.Join(dir, "data"), addr, auth)
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := agents.StartProcess("docker-registry", bin, filepath.Join(dir, "registry.log"), "serve", cfgFile)
	if err != nil {
		return nil, err
	}
	r := &Registry{Addr: addr, Dir: dir, User: o.User, Password: o.Password, proc: p}
	hc := &http.Client{Timeout: 2 * time.Second}
	err = agents.WaitReady(ctx, p, "GET /v2/ to answer 200", 30*time.Second, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		if r.User != "" {
			req.SetBasicAuth(r.User, r.Password)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("registry: %w", err)
	}
	return r, nil
}

// findBin looks on PATH, then at fallback.
func findBin(fallback string) (string, error) {
	if p, err := exec.LookPath("docker-registry"); err == nil {
		return p, nil
	}
	if st, err := os.Stat(fallback); err == nil && !st.IsDir() {
		return fallback, nil
	}
	return "", errors.New("registry: docker-registry not found on PATH or at " + fallback + ": " + missingHint)
}

// Stop stops the registry by its PID (SIGINT, then SIGKILL after 5 s). Its storage stays
// in Dir.
func (r *Registry) Stop() {
	if r != nil && r.proc != nil {
		r.proc.Stop(5 * time.Second)
	}
}

// PID is the registry process's id (0 for a client of a registry started elsewhere).
func (r *Registry) PID() int {
	if r.proc == nil {
		return 0
	}
	return r.proc.PID()
}

// LogFile is the registry's log ("" for a client of a registry started elsewhere).
func (r *Registry) LogFile() string {
	if r.proc == nil {
		return ""
	}
	return r.proc.LogFile
}

// TailLog returns the last n bytes of the registry's log.
func (r *Registry) TailLog(n int64) string {
	if r.proc == nil {
		return ""
	}
	return r.proc.TailLog(n)
}

// Auth is what a client of this registry authenticates with: basic auth when it has a
// user, else anonymous.
func (r *Registry) Auth() authn.Authenticator {
	if r.User == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.User, Password: r.Password}
}

// Image is what Push builds: a single-layer linux/amd64 image around a static binary.
type Image struct {
	Binary     string            // path of a static binary (see BuildStatic); it is /app, mode 0755
	Entrypoint []string          // default ["/app"]
	Env        []string          // NAME=value, e.g. PORT=8080 for the port the app listens on
	Files      map[string][]byte // extra files, by absolute path in the image, mode 0644
}

// Ref names a pushed image.
type Ref struct {
	Tag    string // 127.0.0.1:port/repo:tag
	Digest string // sha256:…
	Pinned string // 127.0.0.1:port/repo@sha256:…, what a Nomad job should run
}

// Build assembles img. The same binary, entrypoint, env and files always give the same
// digest: every timestamp is the Unix epoch, files are in sorted order, owner root.
func Build(img Image) (v1.Image, error) {
	// Every timestamp is the epoch, so that the digest depends on the content only.
	epoch := time.Unix(0, 0).UTC()
	bin, err := os.ReadFile(img.Binary)
	if err != nil {
		return nil, fmt.Errorf("registry: image binary: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	add := func(path string, mode int64, data []byte) error {
		path = strings.TrimPrefix(filepath.Clean("/"+path), "/")
		// Parent directories first, once each, so any runtime can unpack the layer.
		for i := range path {
			if path[i] == '/' && !dirs[path[:i]] {
				dirs[path[:i]] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path[:i] + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
					return err
				}
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("/app", 0o755, bin); err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(img.Files))
	for p := range img.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if filepath.Clean("/"+p) == "/app" {
			return nil, errors.New("registry: Files must not replace /app (that is Binary)")
		}
		if err := add(p, 0o644, img.Files[p]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerTar := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	im, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := im.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = img.Entrypoint
	if len(cf.Config.Entrypoint) == 0 {
		cf.Config.Entrypoint = []string{"/app"}
	}
	cf.Config.Env = img.Env
	for i := range cf.History {
		cf.History[i].Created = v1.Time{Time: epoch}
	}
	return mutate.ConfigFile(im, cf)
}

// Push builds img and pushes it as repoTag ("repo:tag"; the tag defaults to latest) to the
// registry at r.Addr, with r's credentials.
func (r *Registry) Push(ctx context.Context, repoTag string, img Image) (Ref, error) {
	tag, err := name.NewTag(r.Addr+"/"+repoTag, name.Insecure)
	if err != nil {
		return Ref{}, fmt.Errorf("registry: %w", err)
	}
	im, err := Build(img)
	if err != nil {
		return Ref{}, err
	}
	if err := remote.Write(tag, im, remote.WithContext(ctx), remote.WithAuth(r.Auth())); err != nil {
		return Ref{}, fmt.Errorf("registry: push %s: %w", tag, err)
	}
	d, err := im.Digest()
	if err != nil {
		return Ref{}, err
	}
	repo := tag.Context().Name()
	return Ref{Tag: repo + ":" + tag.TagStr(), Digest: d.String(), Pinned: repo + "@" + d.String()}, nil
}

// BuildStatic builds main package pkg of the rouse module (e.g. "./examples/hello") into
// out as a static linux binary (CGO_ENABLED=0, -trimpath), which runs in an image with
// nothing else in it.
func BuildStatic(pkg, out string) error {
	root, err := agents.ModuleRoot()
	if err != nil {
		return err
	}
	if out, err = filepath.Abs(out); err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (static): %v\n%s", pkg, err, b)
	}
	return nil
}
