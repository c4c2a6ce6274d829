package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/agents"
)

// devArgs are the flags of a `rouse dev` that collides with nothing else on the machine.
func devArgs(t *testing.T, dir string) []string {
	t.Helper()
	ports, err := agents.FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"dev", "--dir", dir,
		"--consul-port", strconv.Itoa(ports[0]), "--nomad-port", strconv.Itoa(ports[1]),
		"--listen", "127.0.0.1:" + strconv.Itoa(ports[2]), "--admin-listen", "127.0.0.1:" + strconv.Itoa(ports[3]),
		"--scaler-listen", "127.0.0.1:" + strconv.Itoa(ports[4])}
}

// TestDevUpAndSIGTERM: `rouse dev` brings the platform up with an example in under 30 s,
// serves it through the gateway, and on SIGTERM exits 0 leaving no agent, alloc or
// workload process behind.
func TestDevUpAndSIGTERM(t *testing.T) {
	rouseBin, helloBin := bins(t)
	dir := t.TempDir()
	args := append(devArgs(t, dir), "-f", filepath.Join(repoRoot(t), "examples/hello/service.hcl"), "-var", "bin="+filepath.Dir(helloBin))
	// examples/hello/service.hcl runs ${bin}/hello.
	if filepath.Base(helloBin) != "hello" {
		link := filepath.Join(t.TempDir(), "hello")
		if err := os.Symlink(helloBin, link); err != nil {
			t.Fatal(err)
		}
		args[len(args)-1] = "bin=" + filepath.Dir(link)
	}
	cmd := exec.Command(rouseBin, args...)
	cmd.Env = append(os.Environ(), "ROUSE_BIN_DIR="+filepath.Join(repoRoot(t), "bin"))
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	// However the test ends, stop rouse dev the way a user does, so it cleans up.
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(90 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
	}()

	var out strings.Builder
	var pids []int
	pidRe := regexp.MustCompile(`pid (\d+)\)`)
	var curlHost, curlAddr string
	curlRe := regexp.MustCompile(`curl -H 'Host: ([^']+)' http://([^/]+)/`)
	timeout := time.After(60 * time.Second)
ready:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("rouse dev ended before it was ready:\n%s\nstderr:\n%s", out.String(), stderr.String())
			}
			out.WriteString(l + "\n")
			if m := pidRe.FindStringSubmatch(l); m != nil {
				pid, _ := strconv.Atoi(m[1])
				pids = append(pids, pid)
			}
			if m := curlRe.FindStringSubmatch(l); m != nil {
				curlHost, curlAddr = m[1], m[2]
			}
			if strings.HasPrefix(l, "Press Ctrl-C") {
				break ready
			}
		case <-timeout:
			t.Fatalf("not ready after 60 s:\n%s", out.String())
		}
	}
	up := time.Since(start)
	t.Logf("rouse dev ready in %s", up)
	if up > 30*time.Second {
		t.Errorf("rouse dev took %s to come up, want < 30 s", up)
	}
	if len(pids) != 2 || curlHost == "" {
		t.Fatalf("want consul and nomad pids and a curl hint in:\n%s", out.String())
	}
	req, _ := http.NewRequest("GET", "http://"+curlAddr+"/", nil)
	req.Host = curlHost
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "Hello rouse!") {
		t.Fatalf("through the gateway: %d %q", resp.StatusCode, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { // keep draining so the child never blocks on a full pipe
		}
	}()
	select {
	case err := <-exited:
		exited <- err // for the deferred teardown
		if err != nil {
			t.Fatalf("rouse dev after SIGTERM: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("rouse dev did not exit within 90 s of SIGTERM")
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("agent pid %d still running after rouse dev exited", pid)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(dir)) {
			t.Errorf("process %s outlived rouse dev: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	if c, err := net.DialTimeout("tcp", curlAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("gateway %s still accepting after exit", curlAddr)
	}
}

// Bad input gets one clear line that says what to do.
func TestDevBadInput(t *testing.T) {
	rouseBin, _ := bins(t)
	run := func(env []string, args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, rouseBin, args...)
		cmd.Env = env
		b, _ := cmd.CombinedOutput()
		return string(b), cmd.ProcessState.ExitCode()
	}
	base := append(os.Environ(), "ROUSE_BIN_DIR="+filepath.Join(repoRoot(t), "bin"))

	out, code := run(base, "dev", "--no-such-flag")
	if code != exitUsage || !strings.Contains(out, "unknown flag: --no-such-flag") {
		t.Errorf("unknown flag: exit %d\n%s", code, out)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	args := devArgs(t, t.TempDir())
	for i, a := range args {
		if a == "--listen" {
			args[i+1] = l.Addr().String()
		}
	}
	out, code = run(base, args...)
	if code != exitError || !strings.Contains(out, l.Addr().String()+" is not free") {
		t.Errorf("port in use: exit %d\n%s", code, out)
	}

	empty := t.TempDir()
	noBins := []string{"PATH=" + empty, "HOME=" + empty, "ROUSE_BIN_DIR=" + empty}
	cmd := exec.Command(rouseBin, devArgs(t, t.TempDir())...)
	cmd.Env, cmd.Dir = noBins, empty // outside the module: its bin/ is not found either
	b, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != exitError || !strings.Contains(string(b), "make tools") {
		t.Errorf("missing binary: exit %d\n%s", cmd.ProcessState.ExitCode(), b)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := agents.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
