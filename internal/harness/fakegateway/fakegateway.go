// Package fakegateway is a stand-in for a rouse gateway's admin listener, for the
// scaler's tests: /gauges and /activations in the real wire format (internal/gauges),
// answering from state the test sets, and telling the test when a scaler is parked on
// its /activations long poll, so tests wait for that instead of sleeping.
package fakegateway

import (
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rouse-run/rouse/internal/gauges"
)

// Gateway is one fake gateway, serving until the test ends (or Close).
type Gateway struct {
	id  string
	srv *httptest.Server

	mu      sync.Mutex
	revs    map[string]*gauges.Revision // by namespace/revision
	fail    bool                        // /gauges answers 503
	reads   int                         // /gauges answered
	seq     uint64                      // activation sequence
	acts    []gauges.Activation
	changed chan struct{}  // closed when seq moves
	parked  map[uint64]int // /activations long polls waiting, by their ?after=
	done    chan struct{}
	closed  bool
}

// Start serves a fake gateway named id on a loopback port until t ends.
func Start(t testing.TB, id string) *Gateway {
	g := &Gateway{id: id, revs: map[string]*gauges.Revision{}, changed: make(chan struct{}),
		parked: map[uint64]int{}, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/gauges", g.serveGauges)
	mux.HandleFunc("/activations", g.serveActivations)
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.Close)
	return g
}

// ID is the gateway's name in its reports.
func (g *Gateway) ID() string { return g.id }

// Addr is the admin listener's host:port.
func (g *Gateway) Addr() string { return g.srv.Listener.Addr().String() }

// Close stops serving (as a gateway that died would); a second Close does nothing.
func (g *Gateway) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	close(g.done)
	g.mu.Unlock()
	g.srv.Close()
}

// Set is the gauge line of one revision from now on.
func (g *Gateway) Set(ns, rev string, inFlight, held int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := ns + "/" + rev
	v := g.revs[k]
	if v == nil {
		v = &gauges.Revision{Namespace: ns, Revision: rev}
		g.revs[k] = v
	}
	v.InFlight, v.Held = inFlight, held
}

// SetFail makes /gauges answer 503 (true) or work again (false).
func (g *Gateway) SetFail(fail bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fail = fail
}

// Reads is how many /gauges reads were answered.
func (g *Gateway) Reads() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reads
}

// Activate announces acts as the revisions holding requests: the activation sequence
// moves on and every parked long poll answers. It returns the new sequence.
func (g *Gateway) Activate(acts ...gauges.Activation) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	g.acts = acts
	close(g.changed)
	g.changed = make(chan struct{})
	return g.seq
}

// Parked is how many /activations long polls wait with ?after=seq. After Activate
// returned seq, Parked(seq) > 0 means a poller took that answer, handled it and came
// back for the next.
func (g *Gateway) Parked(seq uint64) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.parked[seq]
}

func (g *Gateway) serveGauges(w http.ResponseWriter, _ *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	g.reads++
	rep := gauges.Report{Gateway: g.id, At: time.Now()}
	keys := make([]string, 0, len(g.revs))
	for k := range g.revs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rep.Revisions = append(rep.Revisions, *g.revs[k])
	}
	_ = gauges.Write(w, rep)
}

// serveActivations answers as the gateway does: at once when the sequence differs from
// ?after=, else when it moves or ?wait= passes.
func (g *Gateway) serveActivations(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	g.mu.Lock()
	if after == g.seq && wait > 0 {
		ch := g.changed
		g.parked[after]++
		g.mu.Unlock()
		timer := time.NewTimer(wait)
		defer timer.Stop()
		var gone bool
		select {
		case <-ch:
		case <-timer.C:
		case <-r.Context().Done():
			gone = true
		case <-g.done:
			gone = true
		}
		g.mu.Lock()
		g.parked[after]--
		if gone {
			g.mu.Unlock()
			return
		}
	}
	seq, acts := g.seq, g.acts
	g.mu.Unlock()
	_ = gauges.WriteActivations(w, seq, acts)
}
