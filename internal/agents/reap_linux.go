package agents

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// reap is the safety net after a Nomad agent has exited: it ends the task helpers
// (executor, logmon) whose command line names the agent's own data dir — so they can only
// be ours — together with their children, and lazily unmounts the tmpfs mounts Nomad left
// under that dir. Normally PurgeAll has already had the client clean all of this up.
func reap(dataDir string) {
	if dataDir == "" || !strings.Contains(dataDir, string(filepath.Separator)) {
		return
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	children := map[int][]int{}
	var ours []int
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == self {
			continue
		}
		if stat, err := os.ReadFile(p + "/stat"); err == nil {
			// The field after the parenthesised command name is the state, then the ppid.
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				f := strings.Fields(string(stat[i+1:]))
				if len(f) > 1 {
					if ppid, err := strconv.Atoi(f[1]); err == nil {
						children[ppid] = append(children[ppid], pid)
					}
				}
			}
		}
		if cmd, err := os.ReadFile(p + "/cmdline"); err == nil && bytes.Contains(cmd, []byte(dataDir+"/")) {
			ours = append(ours, pid)
		}
	}
	var kill func(pid int)
	kill = func(pid int) {
		for _, c := range children[pid] {
			kill(c)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range ours {
		kill(pid)
	}
	if mounts, err := os.ReadFile("/proc/self/mounts"); err == nil {
		lines := strings.Split(string(mounts), "\n")
		for i := len(lines) - 1; i >= 0; i-- { // deepest last-mounted first
			f := strings.Fields(lines[i])
			if len(f) > 1 && strings.HasPrefix(f[1], dataDir+"/") {
				_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
	}
}

// ReapStale cleans up after runs that died without stopping (a test binary killed by its
// timeout skips every deferred Stop): for each directory matching pattern that is older
// than minAge and that no live Nomad agent uses (no process names its nomad.hcl), it ends
// the processes naming the directory, unmounts what Nomad mounted there, and removes it.
// minAge keeps it off a directory another run has just created and not yet started in.
func ReapStale(pattern string, minAge time.Duration) {
	dirs, _ := filepath.Glob(pattern)
	for _, dir := range dirs {
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() || time.Since(st.ModTime()) < minAge || inUse(filepath.Join(dir, "nomad.hcl")) {
			continue
		}
		reap(dir)
		_ = os.RemoveAll(dir)
	}
}

// inUse reports whether a live process has path on its command line.
func inUse(path string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(path)) {
			return true
		}
	}
	return false
}
