package wake

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// Where the CPU went during a wake, from /proc (Linux): the machine's busy share, and the
// CPU time of this cluster's processes by kind — the Nomad agent, its plugin processes
// (logmon and executor, one of each per task), the apps, Consul, and this process (the
// gateway, the scaler and the benchmark's client).

const clkTck = 100 // USER_HZ on Linux

type ticks struct{ busy, total uint64 }

func busyTicks() ticks {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ticks{}
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	var t ticks
	for i, f := range strings.Fields(string(line))[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}

func (t ticks) busyPct(before ticks) float64 {
	if t.total == before.total {
		return 0
	}
	return 100 * float64(t.busy-before.busy) / float64(t.total-before.total)
}

func cpus() int { return runtime.NumCPU() }

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// procSnap is each process's CPU ticks and kind, by PID.
type procSnap map[int]procCPU

type procCPU struct {
	kind  string
	ticks uint64
}

// procCPU snapshots this process and every process of this cluster: the agents (their
// command lines name the cluster's folder) and their descendants.
func (b *bench) procCPU() procSnap {
	type st struct {
		ppid  int
		ticks uint64
		cmd   string
	}
	all := map[int]st{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the ")" closing comm: state ppid … utime(14) stime(15).
		i := bytes.LastIndexByte(raw, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(raw[i+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		stt, _ := strconv.ParseUint(f[12], 10, 64)
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		all[pid] = st{ppid, ut + stt, string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))}
	}
	kindOf := func(pid int) string {
		if pid == os.Getpid() {
			return "gateway+scaler+client (this process)"
		}
		for p, hops := pid, 0; p > 1 && hops < 10; p, hops = all[p].ppid, hops+1 {
			cmd := all[p].cmd
			// Nomad's command line names the cluster's folder (its config file), Consul's
			// (-dev, no data dir) its HTTP port.
			_, consulPort, _ := strings.Cut(b.c.ConsulAddr, ":")
			if !strings.Contains(cmd, " agent ") || (!strings.Contains(cmd, b.c.Dir) && !strings.Contains(cmd, "-http-port "+consulPort+" ")) {
				continue
			}
			switch {
			case strings.Contains(cmd, "consul"):
				if p == pid {
					return "consul agent"
				}
				return "consul children"
			case p == pid:
				return "nomad agent"
			}
			own := all[pid].cmd
			switch {
			case strings.Contains(own, " logmon"):
				return "nomad logmon plugins"
			case strings.Contains(own, " executor "):
				return "nomad executor plugins"
			case strings.Contains(own, "/hello"):
				return "apps (hello)"
			}
			return "other nomad children"
		}
		return ""
	}
	snap := procSnap{}
	for pid, s := range all {
		if k := kindOf(pid); k != "" {
			snap[pid] = procCPU{k, s.ticks}
		}
	}
	return snap
}

// minus is the CPU-seconds each kind used since before (processes that exited meanwhile
// are not counted), largest first.
func (p procSnap) minus(before procSnap) string {
	by := map[string]uint64{}
	n := map[string]int{}
	for pid, c := range p {
		by[c.kind] += c.ticks - min(before[pid].ticks, c.ticks)
		if _, ok := before[pid]; !ok {
			n[c.kind]++
		}
	}
	kinds := make([]string, 0, len(by))
	for k := range by {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int { return int(by[b]) - int(by[a]) })
	var out []string
	for _, k := range kinds {
		out = append(out, fmt.Sprintf("%s %.2f (%d new)", k, float64(by[k])/clkTck, n[k]))
	}
	return strings.Join(out, ", ")
}
