// Package agents starts and stops real Consul and Nomad agent processes on loopback: the
// platform under `rouse dev` and under every integration test. It owns their data
// directories and log files, and stops only the PIDs it started.
package agents

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Versions rouse is built and tested against (tools/*/go.mod pin the same).
const (
	NomadVersion  = "1.11.1"
	ConsulVersion = "1.21.0"
)

// Binaries are the agent executables to run.
type Binaries struct{ Nomad, Consul string }

// missingHint says how to get the agents.
const missingHint = "run `make tools` (builds pinned Nomad " + NomadVersion + " and Consul " + ConsulVersion + " into bin/), or put nomad and consul on PATH"

// FindBinaries looks in $ROUSE_BIN_DIR, then the bin/ folder of the module that holds the
// working directory, then PATH.
func FindBinaries() (Binaries, error) {
	var dirs []string
	if d := os.Getenv("ROUSE_BIN_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	if root, err := ModuleRoot(); err == nil {
		dirs = append(dirs, filepath.Join(root, "bin"))
	}
	find := func(name string) string {
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return p
			}
		}
		p, _ := exec.LookPath(name)
		return p
	}
	b := Binaries{Nomad: find("nomad"), Consul: find("consul")}
	var missing []string
	if b.Nomad == "" {
		missing = append(missing, "nomad")
	}
	if b.Consul == "" {
		missing = append(missing, "consul")
	}
	if len(missing) > 0 {
		where := append(append([]string{}, dirs...), "PATH")
		return b, fmt.Errorf("%s not found (looked in %s): %s", strings.Join(missing, " and "), strings.Join(where, ", "), missingHint)
	}
	return b, nil
}

// ModuleRoot walks up from the working directory to the folder holding rouse's go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/rouse-run/rouse\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the rouse module")
		}
		dir = parent
	}
}

// GoBuild builds a main package of the rouse module (e.g. "./examples/hello") into out.
func GoBuild(pkg, out string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// retryBind starts an agent again, on new ports, while it fails because a port FreePorts
// gave it was taken before it bound it (by another test package's agent, or as the
// ephemeral port of some outgoing connection): seen in CI as Consul's "bind: address
// already in use".
func retryBind[T any](start func() (T, error)) (T, error) {
	var v T
	var err error
	for range 3 {
		if v, err = start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
			return v, err
		}
	}
	return v, err
}

// FreePorts returns n distinct loopback TCP ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// CheckPortFree returns a clear error when addr cannot be listened on.
func CheckPortFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s is not free (%v): stop what listens there or choose another address", addr, errors.Unwrap(err))
	}
	return l.Close()
}

// Process is one agent we started.
type Process struct {
	Name    string
	LogFile string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

func start(name, bin, logFile string, args ...string) (*Process, error) {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// The agent dies with us even if we are killed: no agent is left behind. Its own
	// process group keeps a terminal's Ctrl-C away from it, so the agent is still up
	// while we stop its jobs and let its client clean up the allocations.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, LogFile: logFile, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the agent's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, with its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop asks the agent to leave (SIGINT), and kills it if it has not exited within grace.
func (p *Process) Stop(grace time.Duration) {
	if ok, _ := p.Exited(); ok {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill ends the process at once (SIGKILL, no clean-up: a power cut) and waits for it.
func (p *Process) Kill() {
	if ok, _ := p.Exited(); ok {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig to the process (SIGSTOP and SIGCONT pause and resume it).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// TailLog returns the last n bytes of the agent's log.
func (p *Process) TailLog(n int64) string {
	f, err := os.Open(p.LogFile)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, _ := f.Stat()
	off := int64(0)
	if st != nil && st.Size() > n {
		off = st.Size() - n
	}
	buf := make([]byte, n)
	k, _ := f.ReadAt(buf, off)
	return string(buf[:k])
}

// waitFor polls ok until it returns true, the process exits, or the deadline passes.
func waitFor(ctx context.Context, p *Process, what string, timeout time.Duration, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok() {
			return nil
		}
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited while waiting for %s (%v); last log lines:\n%s", p.Name, what, err, p.TailLog(3000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: timed out after %s waiting for %s; log: %s", p.Name, timeout, what, p.LogFile)
		case <-tick.C:
		}
	}
}
