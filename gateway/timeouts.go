package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/upstream"
)

// Knative's three request timeouts, as the gateway enforces them on the exchange with
// an instance:
//
//   - timeout (timeoutSeconds): the whole request, from its arrival; the upstream
//     connection's deadline (upstream.Conn.SetDeadline), or the h2c request's context;
//   - response_start_timeout (responseStartTimeoutSeconds): from the request sent to the
//     instance (its head, and its body when that was all here; a streamed body when it
//     ended) to the response's head;
//   - idle_timeout (idleTimeoutSeconds): no byte either way, from the request sent to the
//     response's end (a streaming response, a WebSocket tunnel).
//
// Before the response starts, each answers 504 with its own reason; after, it can only
// cut the response off (close, or an HTTP/2 reset), logged with the reason. With both
// revision fields 0 — the common case — nothing here runs: the exchange has only its
// connection deadline, as before.

const (
	reasonTimeout       = "timeout"
	reasonResponseStart = "response_start_timeout"
	reasonIdle          = "idle_timeout"
)

// limits are one exchange's bounds beyond its deadline, on the stack of the exchange.
// Without bounds (on() false) nothing but newLimits' config load runs.
type limits struct {
	rev         *revision
	deadline    time.Time     // the whole request's
	start, idle time.Duration // response_start_timeout, idle_timeout; 0 = none
	rdl         time.Time     // the read deadline set on the instance connection
	which       string        // the bound rdl stands for
	wholeDL     time.Time     // deadline as the connection has it (with its slack)
}

func newLimits(rev *revision, deadline time.Time) limits {
	cfg := rev.config()
	return limits{rev: rev, deadline: deadline, start: cfg.ResponseStartTimeout, idle: cfg.IdleTimeout, which: reasonTimeout}
}

// on: the revision has a bound beyond its timeout.
func (l *limits) on() bool { return l.start > 0 || l.idle > 0 }

// slack is how late a bound of d may fire: never early, and at most 1 % of it (≤ 1 s)
// late, as for the timeout (upstream.Conn.SetDeadline): a steady stream re-arms the
// connection's timer only when that slack is used up, not on every read.
func slack(d time.Duration) time.Duration { return min(d/100, time.Second) }

// awaitHead bounds the wait for the response head, the request being sent at now: by
// response_start_timeout and idle_timeout, whichever ends first, when before the deadline.
func (l *limits) awaitHead(uc *upstream.Conn, now time.Time) {
	l.wholeDL = l.deadline.Add(slack(l.rev.timeout()))
	dl, which := l.wholeDL, reasonTimeout
	if l.start > 0 && now.Add(l.start).Before(dl) {
		dl, which = now.Add(l.start), reasonResponseStart
	}
	if l.idle > 0 && now.Add(l.idle).Before(dl) {
		dl, which = now.Add(l.idle), reasonIdle
	}
	l.rdl, l.which = time.Time{}, which
	if which != reasonTimeout {
		l.rdl = dl
		uc.BoundReads(dl)
	}
}

// headRead: the response started at now. The reads of its body are bounded by
// idle_timeout from now on (beforeRead), or by the deadline again.
func (l *limits) headRead(uc *upstream.Conn, now time.Time) {
	if l.idle > 0 {
		l.rdl = time.Time{}
		l.beforeRead(uc, now)
		return
	}
	if l.which != reasonTimeout {
		l.which = reasonTimeout
		uc.SetDeadline(l.deadline, l.rev.timeout())
	}
}

// beforeRead pushes the read deadline for idle_timeout, when it has moved by its slack.
func (l *limits) beforeRead(uc *upstream.Conn, now time.Time) {
	if l.idle <= 0 {
		return
	}
	want := now.Add(l.idle)
	if !l.rdl.Before(want) {
		return
	}
	dl, which := want.Add(slack(l.idle)), reasonIdle
	if !dl.Before(l.wholeDL) {
		dl, which = l.wholeDL, reasonTimeout
	}
	if dl != l.rdl {
		l.rdl, l.which = dl, which
		uc.BoundReads(dl)
	}
}

// failure is the answer to a request whose exchange failed with err before the
// response started.
func (l *limits) failure(err error) failure {
	if isTimeout(err) && l.which != reasonTimeout {
		return timeoutFailure(l.rev, l.which)
	}
	return upstreamFailure(l.rev, err)
}

// cutErr is the error to log for a response cut off by err, when a timeout did it.
func (l *limits) cutErr(err error) error {
	if err == nil || !isTimeout(err) {
		return nil
	}
	return timeoutCut(l.which)
}

// timeoutCut, logged as the access log's "timeout" field, says which timeout cut a
// response off after it started.
type timeoutCut string

func (t timeoutCut) Error() string { return string(t) }

// timeoutFailure is the 504 for a request whose response did not start within a bound.
func timeoutFailure(rev *revision, reason string) failure {
	cfg := rev.config()
	var msg string
	switch reason {
	case reasonResponseStart:
		msg = "rouse: revision " + rev.name + " did not start its response within its response_start_timeout of " + cfg.ResponseStartTimeout.String() + "\n"
	case reasonIdle:
		msg = "rouse: revision " + rev.name + " sent nothing within its idle_timeout of " + cfg.IdleTimeout.String() + "\n"
	default:
		return upstreamFailure(rev, timeoutError{})
	}
	return failure{&http1.Error{Status: 504, Reason: reason, Msg: msg}, ""}
}

// watchdog enforces response_start_timeout and idle_timeout on an exchange that has no
// connection of its own to set deadlines on (an HTTP/2 stream to an h2c instance): one
// timer per request, set only when the revision has a bound; activity is an atomic store,
// and the timer is re-armed only when it fires early.
type watchdog struct {
	g           *Gateway
	start, idle time.Duration
	sent        atomic.Int64 // unix nanos the request was sent (a streamed body: ended); 0 = not yet
	last        atomic.Int64 // unix nanos of the last byte either way
	started     atomic.Bool  // the response head arrived
	cancel      context.CancelCauseFunc
	mu          sync.Mutex
	t           *time.Timer
	done        bool
}

// timeoutCause cancels an h2c exchange's context.
type timeoutCause string

func (c timeoutCause) Error() string   { return string(c) }
func (c timeoutCause) Timeout() bool   { return true }
func (c timeoutCause) Temporary() bool { return true }

// newWatchdog returns ctx, canceled when a bound passes, and the watchdog (nil, and ctx
// itself, when the revision has none). The request is sent now, or, when its body
// streams, once bodyEnd is called: as for HTTP/1.1, response_start_timeout counts from
// then (a client-streaming call answers after its last message).
func newWatchdog(ctx context.Context, g *Gateway, rev *revision, streams bool) (context.Context, *watchdog) {
	cfg := rev.config()
	if cfg.ResponseStartTimeout <= 0 && cfg.IdleTimeout <= 0 {
		return ctx, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{g: g, start: cfg.ResponseStartTimeout, idle: cfg.IdleTimeout, cancel: cancel}
	now := g.clk.Now().UnixNano()
	w.last.Store(now)
	if !streams {
		w.sent.Store(now)
	}
	first := w.idle
	if w.start > 0 && (first <= 0 || w.start < first) {
		first = w.start
	}
	w.mu.Lock() // fire may run before the assignment is seen otherwise
	w.t = time.AfterFunc(first, w.fire)
	w.mu.Unlock()
	return ctx, w
}

// touch records a byte either way.
func (w *watchdog) touch() {
	if w != nil {
		w.last.Store(w.g.clk.Now().UnixNano())
	}
}

// bodyEnd: the streamed request body ended; the request is sent.
func (w *watchdog) bodyEnd() {
	if w != nil && w.sent.Load() == 0 {
		w.sent.Store(w.g.clk.Now().UnixNano())
	}
}

// headers: the response started.
func (w *watchdog) headers() {
	if w == nil {
		return
	}
	w.touch()
	w.started.Store(true)
	if w.idle <= 0 {
		w.stop()
	}
}

func (w *watchdog) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.done = true
	w.t.Stop()
	w.mu.Unlock()
}

func (w *watchdog) fire() {
	now := w.g.clk.Now()
	var next time.Duration = -1
	if !w.started.Load() && w.start > 0 {
		left := w.start // the body still streams: look again then
		if sent := w.sent.Load(); sent != 0 {
			left = time.Unix(0, sent).Add(w.start).Sub(now)
		}
		if left <= 0 {
			w.cancel(timeoutCause(reasonResponseStart))
			return
		}
		next = left
	}
	if w.idle > 0 {
		left := time.Unix(0, w.last.Load()).Add(w.idle).Sub(now)
		if left <= 0 {
			w.cancel(timeoutCause(reasonIdle))
			return
		}
		if next < 0 || left < next {
			next = left
		}
	}
	if next < 0 {
		return
	}
	w.mu.Lock()
	if !w.done {
		w.t.Reset(next)
	}
	w.mu.Unlock()
}

// reason is the bound that canceled ctx, or "".
func watchdogReason(ctx context.Context) string {
	var c timeoutCause
	if errors.As(context.Cause(ctx), &c) {
		return string(c)
	}
	return ""
}

// touchReader records activity on each read of a response body that has a watchdog:
// its bytes, and its start too, so that the time the gateway spent writing to a slow
// client is not taken for the instance's idleness (as for HTTP/1.1, where each read
// pushes the connection's deadline).
type touchReader struct {
	r interface{ Read([]byte) (int, error) }
	w *watchdog
}

func (t touchReader) Read(p []byte) (int, error) {
	t.w.touch()
	n, err := t.r.Read(p)
	if n > 0 {
		t.w.touch()
	}
	return n, err
}
