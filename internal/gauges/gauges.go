// Package gauges is the wire format between gateways and the scaler, served on the
// gateway's admin listener. It is line-oriented text, cheap to write and to parse for
// 10 000 revisions:
//
//	GET /gauges
//	rouse-gauges 1 <gateway-id> <unix-millis>
//	<namespace>/<revision> <in_flight> <queued> <held> <requests_total> <ready>
//	...
//
// in_flight: requests being proxied now; queued: waiting for a free slot on a ready
// instance; held: waiting because the revision has no ready instance (activation);
// requests_total: a counter of completed requests (the scaler derives RPS from it);
// ready: instances this gateway currently routes to.
//
//	GET /activations?after=<seq>&wait=<duration>
//	rouse-activations 1 <seq>
//	<namespace>/<revision> <held>
//	...
//
// lists the revisions holding requests with no ready instance. It answers at once when
// the gateway's activation sequence differs from `after`, otherwise it blocks until it
// changes or `wait` passes: the scaler's activation path from zero rides on it.
package gauges

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// GatewayService is the Consul service every gateway registers as (at its admin address).
const GatewayService = "rouse-gateway"

// MetaRoutesIndex is the gateway's service meta key holding the Consul KV index of the
// route table it serves. rouse apply/traffic/rollback wait until every passing gateway
// reports at least the index of their write before saying the URL is ready.
const MetaRoutesIndex = "routes_index"

// Revision is one gauge line.
type Revision struct {
	Namespace     string
	Revision      string
	InFlight      int64
	Queued        int64
	Held          int64
	RequestsTotal uint64
	Ready         int64
}

// Concurrency is what the scaler scales on: every request in the gateway for the revision.
func (r Revision) Concurrency() int64 { return r.InFlight + r.Queued + r.Held }

// Report is one gateway's answer.
type Report struct {
	Gateway   string
	At        time.Time
	Revisions []Revision
}

// Write renders r.
func Write(w io.Writer, r Report) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "rouse-gauges 1 %s %d\n", r.Gateway, r.At.UnixMilli())
	buf := make([]byte, 0, 128)
	for _, v := range r.Revisions {
		buf = buf[:0]
		buf = append(buf, v.Namespace...)
		buf = append(buf, '/')
		buf = append(buf, v.Revision...)
		for _, n := range []int64{v.InFlight, v.Queued, v.Held} {
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, n, 10)
		}
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, v.RequestsTotal, 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, v.Ready, 10)
		buf = append(buf, '\n')
		bw.Write(buf)
	}
	return bw.Flush()
}

// Read parses what Write wrote. Errors name the line.
func Read(rd io.Reader) (Report, error) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var r Report
	if !sc.Scan() {
		return r, fmt.Errorf("gauges: empty answer")
	}
	h := strings.Fields(sc.Text())
	if len(h) != 4 || h[0] != "rouse-gauges" || h[1] != "1" {
		return r, fmt.Errorf("gauges: line 1: want \"rouse-gauges 1 <id> <millis>\", got %q", sc.Text())
	}
	ms, err := strconv.ParseInt(h[3], 10, 64)
	if err != nil {
		return r, fmt.Errorf("gauges: line 1: time: %w", err)
	}
	r.Gateway, r.At = h[2], time.UnixMilli(ms)
	for line := 2; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 6 {
			return r, fmt.Errorf("gauges: line %d: want 6 fields, got %d", line, len(f))
		}
		ns, rev, ok := strings.Cut(f[0], "/")
		if !ok {
			return r, fmt.Errorf("gauges: line %d: %q is not <namespace>/<revision>", line, f[0])
		}
		v := Revision{Namespace: ns, Revision: rev}
		var perr error
		num := func(s string) int64 {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil && perr == nil {
				perr = err
			}
			return n
		}
		v.InFlight, v.Queued, v.Held = num(f[1]), num(f[2]), num(f[3])
		v.RequestsTotal, err = strconv.ParseUint(f[4], 10, 64)
		if err != nil && perr == nil {
			perr = err
		}
		v.Ready = num(f[5])
		if perr != nil {
			return r, fmt.Errorf("gauges: line %d: %w", line, perr)
		}
		r.Revisions = append(r.Revisions, v)
	}
	return r, sc.Err()
}

// Activation is one revision holding requests with no ready instance.
type Activation struct {
	Namespace string
	Revision  string
	Held      int64
}

// WriteActivations renders the /activations answer.
func WriteActivations(w io.Writer, seq uint64, as []Activation) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "rouse-activations 1 %d\n", seq)
	for _, a := range as {
		fmt.Fprintf(bw, "%s/%s %d\n", a.Namespace, a.Revision, a.Held)
	}
	return bw.Flush()
}

// ReadActivations parses the /activations answer.
func ReadActivations(rd io.Reader) (seq uint64, as []Activation, err error) {
	sc := bufio.NewScanner(rd)
	if !sc.Scan() {
		return 0, nil, fmt.Errorf("activations: empty answer")
	}
	h := strings.Fields(sc.Text())
	if len(h) != 3 || h[0] != "rouse-activations" || h[1] != "1" {
		return 0, nil, fmt.Errorf("activations: line 1: want \"rouse-activations 1 <seq>\", got %q", sc.Text())
	}
	if seq, err = strconv.ParseUint(h[2], 10, 64); err != nil {
		return 0, nil, fmt.Errorf("activations: line 1: %w", err)
	}
	for line := 2; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		ns, rev, ok := strings.Cut(f[0], "/")
		if len(f) != 2 || !ok {
			return 0, nil, fmt.Errorf("activations: line %d: want \"<ns>/<revision> <held>\", got %q", line, sc.Text())
		}
		held, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, nil, fmt.Errorf("activations: line %d: %w", line, err)
		}
		as = append(as, Activation{Namespace: ns, Revision: rev, Held: held})
	}
	return seq, as, sc.Err()
}
