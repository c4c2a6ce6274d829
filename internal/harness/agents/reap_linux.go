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

// reap is the safety net after a Nomad agent has exited: it removes the docker containers
// of its allocations (see reapContainers), ends the task helpers (executor, logmon,
// docker_logger) whose command line names the agent's own data dir — so they can only be
// ours — together with their children, and lazily unmounts the tmpfs mounts Nomad left
// under that dir. Normally PurgeAll has already had the client clean all of this up.
func reap(dataDir string) {
	if dataDir == "" || !strings.Contains(dataDir, string(filepath.Separator)) {
		return
	}
	reapContainers(dataDir)
	for _, pid := range owned(dataDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
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

// owned are the processes that name dataDir on their command line or hold a path under
// it, and every descendant of theirs, children first.
func owned(dataDir string) []int {
	if dataDir == "" || !strings.Contains(dataDir, string(filepath.Separator)) {
		return nil
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
		} else if HoldsPath(pid, dataDir) {
			// logmon's command line is just "nomad logmon"; the task's log files it
			// holds open under the data dir are what make it ours.
			ours = append(ours, pid)
		}
	}
	seen := map[int]bool{}
	var out []int
	var walk func(pid int)
	walk = func(pid int) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		for _, c := range children[pid] {
			walk(c)
		}
		out = append(out, pid)
	}
	for _, pid := range ours {
		walk(pid)
	}
	return out
}

// HoldsPath reports whether process pid has its working directory or an open file under
// dir. A process of another user that cannot be inspected reports false.
func HoldsPath(pid int, dir string) bool {
	base := "/proc/" + strconv.Itoa(pid)
	under := func(link string) bool {
		t, err := os.Readlink(link)
		return err == nil && strings.HasPrefix(t, dir+"/")
	}
	if under(base + "/cwd") {
		return true
	}
	fds, _ := os.ReadDir(base + "/fd")
	for _, fd := range fds {
		if under(base + "/fd/" + fd.Name()) {
			return true
		}
	}
	return false
}

// ReapDir cleans up what a dead rouse dev or test run left under dir (task helpers,
// Nomad's mounts) so the dir can be removed; for a multi-node cluster's dir, call it on
// each node's dir. It reports false, and touches nothing, when
// a live Nomad agent uses dir.
func ReapDir(dir string) bool {
	if agentUses(dir) {
		return false
	}
	reap(dir)
	return true
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
		if err != nil || !st.IsDir() || time.Since(st.ModTime()) < minAge || agentUses(dir) {
			continue
		}
		reap(dir)
		_ = os.RemoveAll(dir)
	}
}

// agentUses reports whether a live Nomad agent has its config under dir: dir/nomad.hcl
// for a single-agent cluster, dir/<node>/nomad.hcl for each agent of a multi-node one.
func agentUses(dir string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(dir+"/")) && bytes.Contains(b, []byte("nomad.hcl")) {
			return true
		}
	}
	return false
}
