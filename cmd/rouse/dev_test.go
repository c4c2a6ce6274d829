package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/harness/agents"
	"github.com/rouse-run/rouse/internal/harness/poll"
)

// devArgs are the flags of a `rouse dev` that collides with nothing else on the machine.
func devArgs(t *testing.T, dir string) []string {
	t.Helper()
	ports, err := agents.FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"dev", "--dir", dir,
		"--consul-port", strconv.Itoa(ports[0]), "--nomad-port", strconv.Itoa(ports[1]),
		"--listen", "127.0.0.1:" + strconv.Itoa(ports[2]), "--admin-listen", "127.0.0.1:" + strconv.Itoa(ports[3]),
		"--scaler-listen", "127.0.0.1:" + strconv.Itoa(ports[4]), "--console-listen", "127.0.0.1:" + strconv.Itoa(ports[5])}
}

// TestDevUpAndSIGTERM: `rouse dev` brings the platform up with an example in under 30 s,
// serves it through the gateway, prints the web console's URL, which lists the example, and
// on SIGTERM exits 0 leaving no agent, alloc or
// workload process behind.
func TestDevUpAndSIGTERM(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	t.Logf("rouse dev ready in %s", d.up)
	if d.up > 30*time.Second {
		t.Errorf("rouse dev took %s to come up, want < 30 s", d.up)
	}
	d.get(t)
	if d.consoleURL == "" {
		t.Fatal("rouse dev printed no console line")
	}
	poll.Until(t, 20*time.Second, "the console listing hello", func() error {
		resp, err := http.Get(d.consoleURL)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `data-service="default/hello"`) {
			return fmt.Errorf("%d, no hello in %.300s", resp.StatusCode, body)
		}
		return nil
	})
	d.stop(t, dir)
}

// TestDevTLS: `rouse dev --tls` serves the example over HTTPS with a certificate it made,
// and HTTP/2 is what a client offering h2 gets, as the printed curl line says.
func TestDevTLS(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir, "--tls")
	if d.caFile == "" {
		t.Fatal("rouse dev --tls printed no curl --cacert line")
	}
	caPEM, err := os.ReadFile(d.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, d.curlAddr)
		}}}
	resp, err := c.Get("https://" + d.curlHost + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.HasPrefix(string(body), "Hello rouse!") {
		t.Fatalf("https through the dev gateway: %d %s %q", resp.StatusCode, resp.Proto, body)
	}
	d.stop(t, dir)
}

// TestDevAfterKill: a `rouse dev` killed outright leaves its allocations' mounts and task
// helpers behind; the next run in the same dir clears them and comes up.
func TestDevAfterKill(t *testing.T) {
	dir := t.TempDir()
	first := startDev(t, dir)
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	first.exited <- nil
	for _, pid := range first.pids { // the agents follow their parent (Pdeathsig)
		poll.Until(t, 30*time.Second, "agent gone after its rouse dev was killed", poll.True(func() bool { return syscall.Kill(pid, 0) != nil }))
	}
	second := startDev(t, dir)
	second.get(t)
	second.stop(t, dir)
}

type devRun struct {
	cmd                *exec.Cmd
	exited             chan error
	lines              chan string
	stderr             *bytes.Buffer
	pids               []int
	curlHost, curlAddr string
	caFile             string // with --tls: the CA the printed curl line trusts
	consoleURL         string
	up                 time.Duration
}

// startDev runs `rouse dev` with examples/hello in dir until it says it is ready.
func startDev(t *testing.T, dir string, extra ...string) *devRun {
	t.Helper()
	rouseBin, helloBin := bins(t)
	args := append(append(devArgs(t, dir), extra...), "-f", filepath.Join(repoRoot(t), "examples/hello/service.hcl"), "-var", "bin="+filepath.Dir(helloBin))
	// examples/hello/service.hcl runs ${bin}/hello.
	if filepath.Base(helloBin) != "hello" {
		link := filepath.Join(t.TempDir(), "hello")
		if err := os.Symlink(helloBin, link); err != nil {
			t.Fatal(err)
		}
		args[len(args)-1] = "bin=" + filepath.Dir(link)
	}
	d := &devRun{cmd: exec.Command(rouseBin, args...), exited: make(chan error, 1), lines: make(chan string, 100), stderr: &bytes.Buffer{}}
	d.cmd.Env = append(os.Environ(), "ROUSE_BIN_DIR="+filepath.Join(repoRoot(t), "bin"))
	stdout, _ := d.cmd.StdoutPipe()
	d.cmd.Stderr = d.stderr
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
		d.exited <- d.cmd.Wait()
	}()
	// However the test ends, stop rouse dev the way a user does, so it cleans up.
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(90 * time.Second):
				_ = d.cmd.Process.Kill()
			}
		}
	})

	var out strings.Builder
	pidRe := regexp.MustCompile(`pid (\d+)\)`)
	curlRe := regexp.MustCompile(`curl -H 'Host: ([^']+)' http://([^/]+)/`)
	consoleRe := regexp.MustCompile(`^\s*console\s+(http://\S+)\s+\(web\)`)
	tlsRe := regexp.MustCompile(`curl --cacert (\S+) --resolve ([^:]+):(\d+):127\.0\.0\.1 https://`)
	timeout := time.After(60 * time.Second)
ready:
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				t.Fatalf("rouse dev ended before it was ready:\n%s\nstderr:\n%s", out.String(), d.stderr.String())
			}
			out.WriteString(l + "\n")
			if m := pidRe.FindStringSubmatch(l); m != nil {
				pid, _ := strconv.Atoi(m[1])
				d.pids = append(d.pids, pid)
			}
			if m := curlRe.FindStringSubmatch(l); m != nil {
				d.curlHost, d.curlAddr = m[1], m[2]
			}
			if m := consoleRe.FindStringSubmatch(l); m != nil {
				d.consoleURL = m[1]
			}
			if m := tlsRe.FindStringSubmatch(l); m != nil {
				d.caFile, d.curlHost, d.curlAddr = m[1], m[2], "127.0.0.1:"+m[3]
			}
			if strings.HasPrefix(l, "Press Ctrl-C") {
				break ready
			}
		case <-timeout:
			t.Fatalf("not ready after 60 s:\n%s", out.String())
		}
	}
	d.up = time.Since(start)
	if len(d.pids) != 2 || d.curlHost == "" {
		t.Fatalf("want consul and nomad pids and a curl hint in:\n%s", out.String())
	}
	go func() {
		for range d.lines { // keep draining so the child never blocks on a full pipe
		}
	}()
	return d
}

// get sends the printed curl line's request through the gateway.
func (d *devRun) get(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+d.curlAddr+"/", nil)
	req.Host = d.curlHost
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "Hello rouse!") {
		t.Fatalf("through the gateway: %d %q", resp.StatusCode, body)
	}
}

// stop sends SIGTERM and checks that nothing of the run is left: agents, processes,
// mounts, listeners.
func (d *devRun) stop(t *testing.T, dir string) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		d.exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("rouse dev after SIGTERM: %v\nstderr:\n%s", err, d.stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("rouse dev did not exit within 90 s of SIGTERM")
	}
	for _, pid := range d.pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("agent pid %d still running after rouse dev exited", pid)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if bytes.Contains(b, []byte(dir)) || agents.HoldsPath(pid, dir) {
			t.Errorf("process %s outlived rouse dev: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	if m, err := os.ReadFile("/proc/self/mounts"); err == nil && bytes.Contains(m, []byte(" "+dir+"/")) {
		t.Errorf("mounts under %s left behind", dir)
	}
	if c, err := net.DialTimeout("tcp", d.curlAddr, time.Second); err == nil {
		c.Close()
		// Another test package running beside this one may have bound the freed port
		// since: only a listener of a process of ours is a leak.
		if pid := listenerPID(d.curlAddr); pid == d.cmd.Process.Pid || slices.Contains(d.pids, pid) || pid == 0 {
			t.Errorf("gateway %s still accepting after exit (pid %d)", d.curlAddr, pid)
		} else {
			t.Logf("%s is listened on again, by pid %d (not this rouse dev)", d.curlAddr, pid)
		}
	}
}

// listenerPID is the process that listens on addr (127.0.0.1:port), from /proc/net/tcp
// and the processes' socket fds; 0 if none is found.
func listenerPID(addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X", n)
	tcp, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0
	}
	inode := ""
	for _, line := range strings.Split(string(tcp), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && strings.HasSuffix(f[1], want) && f[3] == "0A" { // 0A: LISTEN
			inode = f[9]
		}
	}
	if inode == "" {
		return 0
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && l == "socket:["+inode+"]" {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			return pid
		}
	}
	return 0
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
