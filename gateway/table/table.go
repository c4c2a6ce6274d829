// Package table turns rouse's control-plane state (one decoded listing of Consul KV) into
// the gateway's route table: host → weighted revision targets. Build is a pure function and
// a Table is immutable, so the gateway swaps whole tables atomically and its hot path reads
// one without a lock.
package table

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// Revision is one revision some route can send requests to.
type Revision struct {
	Key    string // "<namespace>/<revision>"
	Config revmeta.Config
	// Defaulted is set when the route names a revision whose config is not in KV (yet):
	// the gateway still routes to it with Knative's defaults.
	Defaulted bool
}

// Target is one revision of a route with its share of requests.
type Target struct {
	Revision string
	Percent  int
	Tag      string
	Index    int // position in Table.Revisions()
}

// Route is what one host serves.
type Route struct {
	Host      string
	Namespace string
	Service   string
	Tag       string   // set for a tag host (<tag>-<svc>.<ns>.<domain>)
	Targets   []Target // only targets with a positive share
	cum       []uint64 // cumulative percents, for Pick
}

// Pick chooses a target for a uniformly random n; nil when the route has no positive
// share (the service declared only 0 % targets).
func (r *Route) Pick(n uint32) *Target {
	switch len(r.Targets) {
	case 0:
		return nil
	case 1:
		return &r.Targets[0]
	}
	// Scale n into [0,total) by multiply-shift: no division, and bias is < total/2^32.
	x := uint64(n) * r.cum[len(r.cum)-1] >> 32
	for i, c := range r.cum {
		if x < c {
			return &r.Targets[i]
		}
	}
	return &r.Targets[len(r.Targets)-1]
}

// Table is an immutable route table.
type Table struct {
	domain    string
	hosts     map[string]*Route
	revisions []Revision
	problems  []string
}

// Build makes the table for a snapshot of KV and the public domain. Inconsistencies (a
// host claimed twice, a route to a revision without config) are reported by Problems and
// resolved deterministically, so one bad record never takes every route down.
func Build(snap store.Snapshot, domain string) *Table {
	domain = strings.ToLower(strings.Trim(domain, "."))
	t := &Table{domain: domain, hosts: map[string]*Route{}}
	services := append([]*store.Service(nil), snap.Services...)
	sort.Slice(services, func(i, j int) bool {
		if services[i].Namespace != services[j].Namespace {
			return services[i].Namespace < services[j].Namespace
		}
		return services[i].Name < services[j].Name
	})

	revIndex := map[string]int{}
	type pendingRev struct {
		key string
		rev Revision
	}
	var revs []pendingRev
	indexOf := func(ns, svc, name string) int {
		key := ns + "/" + name
		if i, ok := revIndex[key]; ok {
			return i
		}
		cfg, ok := snap.Revisions[key]
		r := Revision{Key: key, Config: cfg}
		if !ok {
			r.Config = revmeta.Defaults(ns, svc, name)
			r.Defaulted = true
			t.problems = append(t.problems, fmt.Sprintf("service %s/%s routes to revision %s which has no config in KV; using defaults", ns, svc, name))
		}
		revIndex[key] = len(revs)
		revs = append(revs, pendingRev{key, r})
		return len(revs) - 1
	}

	var tagRoutes []*Route
	for _, svc := range services {
		ns, name := strings.ToLower(svc.Namespace), strings.ToLower(svc.Name)
		if ns == "" || name == "" {
			t.problems = append(t.problems, fmt.Sprintf("service record %q/%q has no namespace or name; skipped", svc.Namespace, svc.Name))
			continue
		}
		main := &Route{Host: name + "." + ns + "." + domain, Namespace: ns, Service: name}
		seenTags := map[string]bool{}
		for _, rt := range svc.Route {
			if rt.Revision == "" {
				continue
			}
			idx := indexOf(ns, name, rt.Revision)
			if rt.Percent > 0 {
				main.Targets = append(main.Targets, Target{Revision: rt.Revision, Percent: rt.Percent, Tag: rt.Tag, Index: idx})
			}
			if tag := strings.ToLower(rt.Tag); tag != "" {
				if seenTags[tag] {
					t.problems = append(t.problems, fmt.Sprintf("service %s/%s: tag %q used twice; the first entry wins", ns, name, tag))
					continue
				}
				seenTags[tag] = true
				tagRoutes = append(tagRoutes, &Route{Host: tag + "-" + name + "." + ns + "." + domain, Namespace: ns, Service: name, Tag: tag,
					Targets: []Target{{Revision: rt.Revision, Percent: 100, Tag: rt.Tag, Index: idx}}})
			}
		}
		main.finish()
		t.hosts[main.Host] = main
	}
	// Service hosts win over tag hosts: "a-b.ns" is service a-b before it is tag a of b.
	for _, r := range tagRoutes {
		if prev, ok := t.hosts[r.Host]; ok {
			t.problems = append(t.problems, fmt.Sprintf("host %s: tag %q of service %s/%s collides with service %s/%s; the service wins",
				r.Host, r.Tag, r.Namespace, r.Service, prev.Namespace, prev.Service))
			continue
		}
		r.finish()
		t.hosts[r.Host] = r
	}

	// Index revisions in key order so String and gauges are stable; remap targets.
	order := make([]int, len(revs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return revs[order[a]].key < revs[order[b]].key })
	remap := make([]int, len(revs))
	t.revisions = make([]Revision, len(revs))
	for newIdx, old := range order {
		remap[old] = newIdx
		t.revisions[newIdx] = revs[old].rev
	}
	for _, r := range t.hosts {
		for i := range r.Targets {
			r.Targets[i].Index = remap[r.Targets[i].Index]
		}
	}
	return t
}

func (r *Route) finish() {
	r.cum = make([]uint64, len(r.Targets))
	var sum uint64
	for i, tg := range r.Targets {
		sum += uint64(tg.Percent)
		r.cum[i] = sum
	}
}

// Domain is the public domain the table was built for.
func (t *Table) Domain() string { return t.domain }

// Revisions are every revision some route refers to, sorted by key.
func (t *Table) Revisions() []Revision { return t.revisions }

// Problems are the inconsistencies Build resolved.
func (t *Table) Problems() []string { return t.problems }

// Len is the number of hosts.
func (t *Table) Len() int { return len(t.hosts) }

// Routes returns every route sorted by host.
func (t *Table) Routes() []*Route {
	out := make([]*Route, 0, len(t.hosts))
	for _, r := range t.hosts {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// Lookup finds the route for a Host header value. The port, a trailing dot and letter
// case are ignored.
func (t *Table) Lookup(host []byte) *Route {
	if i := portStart(host); i >= 0 {
		host = host[:i]
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if hasUpper(host) {
		var buf [256]byte
		if len(host) > len(buf) {
			return nil
		}
		b := buf[:len(host)]
		for i, c := range host {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b[i] = c
		}
		return t.hosts[string(b)]
	}
	return t.hosts[string(host)] // the compiler does not allocate for this conversion
}

func portStart(h []byte) int {
	for i := len(h) - 1; i >= 0; i-- {
		switch c := h[i]; {
		case c == ':':
			return i
		case c == ']': // IPv6 literal without port
			return -1
		case c < '0' || c > '9':
			return -1
		}
	}
	return -1
}

func hasUpper(b []byte) bool {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// String prints the table for a person: one line per host and target.
func (t *Table) String() string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tREVISION\tPERCENT\tTAG\tCONCURRENCY\tBURST\tTIMEOUT")
	for _, r := range t.Routes() {
		if len(r.Targets) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t%s\t\t\t\n", r.Host, r.Tag)
			continue
		}
		for i, tg := range r.Targets {
			host := r.Host
			if i > 0 {
				host = ""
			}
			c := t.revisions[tg.Index].Config
			conc := "unlimited"
			if c.Concurrency > 0 {
				conc = fmt.Sprint(c.Concurrency)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d%%\t%s\t%s\t%g\t%s\n", host, tg.Revision, tg.Percent, tg.Tag, conc, c.TargetBurstCapacity, c.Timeout)
		}
	}
	tw.Flush()
	for _, p := range t.problems {
		fmt.Fprintf(&sb, "problem: %s\n", p)
	}
	return sb.String()
}
