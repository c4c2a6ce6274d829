// Package table turns rouse's control-plane state (one decoded listing of Consul KV) into
// the gateway's route table: host → weighted revision targets. Build is a pure function and
// a Table is immutable, so the gateway swaps whole tables atomically and its hot path reads
// one without a lock.
package table

import (
	"fmt"
	"slices"
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
	// Internal: the host is served only on the gateway's internal listener (it is under
	// the internal domain, or its service is internal).
	Internal bool
	cum      []uint64 // cumulative percents, for Pick
	// tags, on a main host whose service has tag-header routing on, are its tags' routes
	// (the tag hosts' of the same domain): nil otherwise, so the hot path checks a pointer.
	tags map[string]*Route
}

// HeaderTags reports whether the route honours a Rouse-Tag header (its service has
// tag_header_routing on and at least one tag).
func (r *Route) HeaderTags() bool { return r.tags != nil }

// ForTag is the route of the route's tag named by a Rouse-Tag header value (letter case
// ignored), or r itself when the route has no such tag: an unknown tag gets the split.
func (r *Route) ForTag(tag []byte) *Route {
	if r.tags == nil || len(tag) == 0 || len(tag) > 63 {
		return r
	}
	var buf [63]byte
	b := buf[:len(tag)]
	for i, c := range tag {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	if t := r.tags[string(b)]; t != nil {
		return t
	}
	return r
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
	domain, internalDomain string
	hosts                  map[string]*Route // the public listener's
	inner                  map[string]*Route // the internal listener's, besides hosts
	revisions              []Revision
	problems               []string
}

// Build makes the table for a snapshot of KV, the public domain and the internal domain
// ("" serves no internal host: internal services are then served nowhere). A public
// service is served at <svc>.<ns>.<domain> on both listeners and at
// <svc>.<ns>.<internalDomain> on the internal one; an internal service only at the
// latter, on the internal listener. Inconsistencies (a host claimed twice, a route to a
// revision without config) are reported by Problems and resolved deterministically, so
// one bad record never takes every route down.
func Build(snap store.Snapshot, domain, internalDomain string) *Table {
	domain = strings.ToLower(strings.Trim(domain, "."))
	internalDomain = strings.ToLower(strings.Trim(internalDomain, "."))
	if internalDomain == domain {
		internalDomain = "" // one name cannot be both; the gateway's config refuses it
	}
	t := &Table{domain: domain, internalDomain: internalDomain, hosts: map[string]*Route{}, inner: map[string]*Route{}}
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

	var all []*Route // every route made, for finish and the index remap
	type tagRoute struct {
		m map[string]*Route
		r *Route
	}
	var tagRoutes []tagRoute
	for _, svc := range services {
		ns, name := strings.ToLower(svc.Namespace), strings.ToLower(svc.Name)
		if ns == "" || name == "" {
			t.problems = append(t.problems, fmt.Sprintf("service record %q/%q has no namespace or name; skipped", svc.Namespace, svc.Name))
			continue
		}
		internal := svc.Visibility == store.VisibilityInternal
		if svc.Visibility != "" && !internal {
			t.problems = append(t.problems, fmt.Sprintf("service %s/%s has unknown visibility %q; served as internal", ns, name, svc.Visibility))
			internal = true // never public by mistake
		}
		var main []Target
		type tagged struct {
			tag string
			tg  Target
		}
		var tags []tagged
		seenTags := map[string]bool{}
		for _, rt := range svc.Route {
			if rt.Revision == "" {
				continue
			}
			idx := indexOf(ns, name, rt.Revision)
			if rt.Percent > 0 {
				main = append(main, Target{Revision: rt.Revision, Percent: rt.Percent, Tag: rt.Tag, Index: idx})
			}
			if tag := strings.ToLower(rt.Tag); tag != "" {
				if seenTags[tag] {
					t.problems = append(t.problems, fmt.Sprintf("service %s/%s: tag %q used twice; the first entry wins", ns, name, tag))
					continue
				}
				seenTags[tag] = true
				tags = append(tags, tagged{tag, Target{Revision: rt.Revision, Percent: 100, Tag: rt.Tag, Index: idx}})
			}
		}
		// The domains this service is served under, and on which listener.
		type place struct {
			m        map[string]*Route
			domain   string
			internal bool
		}
		var places []place
		if !internal {
			places = append(places, place{t.hosts, domain, false})
		}
		if internalDomain != "" {
			places = append(places, place{t.inner, internalDomain, true})
		}
		for _, p := range places {
			r := &Route{Host: name + "." + ns + "." + p.domain, Namespace: ns, Service: name, Internal: p.internal, Targets: slices.Clone(main)}
			if svc.TagHeader && len(tags) > 0 {
				r.tags = make(map[string]*Route, len(tags))
			}
			for _, tg := range tags {
				tr := &Route{Host: tg.tag + "-" + name + "." + ns + "." + p.domain, Namespace: ns, Service: name, Tag: tg.tag,
					Internal: p.internal, Targets: []Target{tg.tg}}
				tagRoutes = append(tagRoutes, tagRoute{p.m, tr})
				all = append(all, tr)
				if r.tags != nil {
					r.tags[tg.tag] = tr
				}
			}
			p.m[r.Host] = r
			all = append(all, r)
		}
	}
	// Service hosts win over tag hosts: "a-b.ns" is service a-b before it is tag a of b.
	for _, tr := range tagRoutes {
		r := tr.r
		if prev, ok := tr.m[r.Host]; ok {
			t.problems = append(t.problems, fmt.Sprintf("host %s: tag %q of service %s/%s collides with service %s/%s; the service wins",
				r.Host, r.Tag, r.Namespace, r.Service, prev.Namespace, prev.Service))
			continue
		}
		tr.m[r.Host] = r
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
	for _, r := range all {
		for i := range r.Targets {
			r.Targets[i].Index = remap[r.Targets[i].Index]
		}
		r.finish()
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

// InternalDomain is the internal domain the table was built for ("" for none).
func (t *Table) InternalDomain() string { return t.internalDomain }

// Revisions are every revision some route refers to, sorted by key.
func (t *Table) Revisions() []Revision { return t.revisions }

// Problems are the inconsistencies Build resolved.
func (t *Table) Problems() []string { return t.problems }

// Len is the number of hosts, of both listeners.
func (t *Table) Len() int { return len(t.hosts) + len(t.inner) }

// Routes returns every route of both listeners sorted by host (Route.Internal: only on
// the internal listener).
func (t *Table) Routes() []*Route {
	out := make([]*Route, 0, len(t.hosts)+len(t.inner))
	for _, r := range t.hosts {
		out = append(out, r)
	}
	for _, r := range t.inner {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// Lookup finds the route the public listener serves for a Host header value. The port,
// a trailing dot and letter case are ignored. An internal service's hosts are not found.
func (t *Table) Lookup(host []byte) *Route { return t.lookup(host, nil) }

// LookupInternal finds the route the internal listener serves for a Host header value:
// every service under the internal domain, and public services under the public domain
// too.
func (t *Table) LookupInternal(host []byte) *Route { return t.lookup(host, t.inner) }

func (t *Table) lookup(host []byte, inner map[string]*Route) *Route {
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
		host = b
	}
	if inner != nil {
		if r := inner[string(host)]; r != nil { // the compiler does not allocate for these conversions
			return r
		}
	}
	return t.hosts[string(host)]
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
			if r.Internal {
				host += " (internal)"
			}
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
