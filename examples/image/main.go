// image builds an example app (examples/hello or examples/autoscale) as a static binary,
// wraps it in a one-layer container image in Go (no `docker build`, no base image) and
// pushes it to a registry, printing the pinned reference to run:
//
//	go run ./examples/image -app hello -registry 127.0.0.1:5000 -tag v1
//	127.0.0.1:5000/hello@sha256:…
//
// `image dev` is `make dev-image`: it starts a registry of its own in .dev-registry/ on a
// free loopback port, pushes the app there and runs `rouse dev` on the app's image.hcl with
// that reference; Ctrl-C or SIGTERM goes to rouse dev, and the registry stops when it has.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/registry"
)

// appPort is the port the examples listen on inside their image: $PORT, which rouse sets to
// the spec's port (8080 by default) and the image's env sets for a plain `docker run`.
const appPort = "8080"

func main() {
	code, err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) > 0 && args[0] == "dev" {
		return dev(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	app := fs.String("app", "hello", "example to build: hello or autoscale")
	addr := fs.String("registry", "127.0.0.1:5000", "registry to push to (host:port)")
	tag := fs.String("tag", "latest", "image tag")
	user := fs.String("user", "", "registry user (basic auth)")
	password := fs.String("password", os.Getenv("ROUSE_REGISTRY_PASSWORD"), "registry password (env ROUSE_REGISTRY_PASSWORD)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: image [-app hello|autoscale] [-registry host:port] [-tag tag]    build, push, print the pinned ref")
		fmt.Fprintln(stderr, "       image dev [-app hello|autoscale] [-registry-dir .dev-registry] [-rouse bin/rouse] [-- rouse dev flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "rouse-image-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	ref, err := buildAndPush(ctx, &registry.Registry{Addr: *addr, User: *user, Password: *password}, *app, *tag, tmp)
	if err != nil {
		return 1, err
	}
	fmt.Fprintln(stdout, ref.Pinned)
	return 0, nil
}

// buildAndPush builds examples/<app> statically into dir and pushes it to r as <app>:<tag>.
func buildAndPush(ctx context.Context, r *registry.Registry, app, tag, dir string) (registry.Ref, error) {
	if app != "hello" && app != "autoscale" {
		return registry.Ref{}, fmt.Errorf("-app %q: hello or autoscale", app)
	}
	bin := filepath.Join(dir, app)
	if err := registry.BuildStatic("./examples/"+app, bin); err != nil {
		return registry.Ref{}, err
	}
	return r.Push(ctx, app+":"+tag, registry.Image{Binary: bin, Env: []string{"PORT=" + appPort}})
}

// dev is `make dev-image`.
func dev(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("image dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	app := fs.String("app", "hello", "example to run: hello or autoscale")
	dir := fs.String("registry-dir", ".dev-registry", "the registry's config, log and storage (relative to the module root)")
	rouse := fs.String("rouse", "bin/rouse", "the rouse binary (relative to the module root)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: image dev [-app hello|autoscale] [-registry-dir .dev-registry] [-rouse bin/rouse] [-- rouse dev flags, e.g. --listen 127.0.0.1:18080]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	root, err := agents.ModuleRoot()
	if err != nil {
		return 1, err
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	regDir, rouseBin := abs(*dir), abs(*rouse)
	if _, err := os.Stat(rouseBin); err != nil {
		return 1, fmt.Errorf("%v: run `make build` (or `make dev-image`)", err)
	}
	// From here on a signal must not kill us before the registry is stopped.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	reg, err := registry.Start(ctx, regDir)
	if err != nil {
		return 1, err
	}
	defer reg.Stop()
	// The next run's registry has another port: what the engine pulled from this one would
	// only pile up. rouse dev has removed its containers by the time this runs.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := agents.NewDocker().RemoveImages(ctx, reg.Addr+"/"); err != nil {
			fmt.Fprintln(stderr, "image: cleanup:", err)
		}
	}()
	fmt.Fprintf(stdout, "image: registry http://%s/v2/ (storage and log in %s, pid %d)\n", reg.Addr, regDir, reg.PID())
	ref, err := buildAndPush(ctx, reg, *app, "dev", filepath.Join(regDir, "build"))
	if err != nil {
		return 1, err
	}
	fmt.Fprintf(stdout, "image: pushed %s (%s)\n", ref.Tag, ref.Pinned)
	select {
	case s := <-sigs:
		return 1, fmt.Errorf("stopped by %s before rouse dev started", s)
	default:
	}

	spec := filepath.Join("examples", *app, "image.hcl")
	cmdArgs := append([]string{"dev", "-f", spec, "-var", "image=" + ref.Pinned}, fs.Args()...)
	fmt.Fprintf(stdout, "image: %s %q\n", rouseBin, cmdArgs)
	cmd := exec.Command(rouseBin, cmdArgs...)
	cmd.Dir = root
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	// Its own process group: a terminal's Ctrl-C reaches it once, forwarded by us, not
	// twice. It gets SIGTERM if we die without forwarding.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return 1, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal()), nil
				}
				return ee.ExitCode(), nil
			}
			if err != nil {
				return 1, err
			}
			return 0, nil
		}
	}
}
