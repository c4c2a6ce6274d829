package gateway

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/gauges"
)

// maxActivationWait caps the long poll of /activations.
const maxActivationWait = 5 * time.Minute

func (g *Gateway) newAdminServer() *fasthttp.Server {
	prom := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(g.metrics.registry(), promhttp.HandlerOpts{}))
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			switch string(ctx.Path()) {
			case "/gauges":
				g.serveGauges(ctx)
			case "/activations":
				g.serveActivations(ctx)
			case "/metrics":
				prom(ctx)
			case "/healthz":
				g.serveHealthz(ctx)
			case "/routes":
				g.serveRoutes(ctx)
			default:
				ctx.Error("rouse gateway admin: /gauges /activations /metrics /healthz /routes\n", fasthttp.StatusNotFound)
			}
		},
		ReadTimeout:           10 * time.Second,
		IdleTimeout:           maxActivationWait + time.Minute,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{g.log},
	}
}

// revStats is one revision's gauges. A waiting request counts as held while the revision
// has no ready instance and as queued otherwise.
type revStats struct {
	InFlight, Queued, Held int64
	Ready                  int
}

func (r *revision) stats() revStats {
	inFlight, waiting, ready := r.pool.Stats()
	s := revStats{InFlight: inFlight, Ready: ready}
	if ready == 0 {
		s.Held = waiting
	} else {
		s.Queued = waiting
	}
	return s
}

func (g *Gateway) serveGauges(ctx *fasthttp.RequestCtx) {
	rep := gauges.Report{Gateway: g.id, At: g.clk.Now()}
	if rt := g.routing.Load(); rt != nil {
		rep.Revisions = make([]gauges.Revision, 0, len(rt.revs))
		for _, r := range rt.revs {
			s := r.stats()
			rep.Revisions = append(rep.Revisions, gauges.Revision{Namespace: r.ns, Revision: r.name,
				InFlight: s.InFlight, Queued: s.Queued, Held: s.Held, RequestsTotal: r.requests.Load(), Ready: int64(s.Ready)})
		}
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	_ = gauges.Write(ctx, rep)
}

// serveActivations answers at once when the activation sequence differs from ?after=,
// otherwise when it moves or ?wait= (default 30s) passes.
func (g *Gateway) serveActivations(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	after, afterErr := strconv.ParseUint(string(args.Peek("after")), 10, 64)
	wait := 30 * time.Second
	if w := args.Peek("wait"); len(w) > 0 {
		d, err := time.ParseDuration(string(w))
		if err != nil || d < 0 {
			ctx.Error("wait: want a duration like 30s\n", fasthttp.StatusBadRequest)
			return
		}
		wait = min(d, maxActivationWait)
	}
	seq, ch := g.activationState()
	if afterErr == nil && seq == after && wait > 0 {
		t := g.clk.NewTimer(wait)
		select {
		case <-ch:
		case <-t.C():
		case <-g.stopAdmin:
		}
		t.Stop()
		seq, _ = g.activationState()
	}
	var as []gauges.Activation
	if rt := g.routing.Load(); rt != nil {
		for _, r := range rt.revs {
			if s := r.stats(); s.Held > 0 {
				as = append(as, gauges.Activation{Namespace: r.ns, Revision: r.name, Held: s.Held})
			}
		}
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	_ = gauges.WriteActivations(ctx, seq, as)
}

func (g *Gateway) serveHealthz(ctx *fasthttp.RequestCtx) {
	switch {
	case g.routing.Load() == nil:
		ctx.Error("no route table yet\n", fasthttp.StatusServiceUnavailable)
	default:
		ctx.SetBodyString("ok\n")
	}
}

// serveRoutes prints the route table and each revision's instances, for a person.
func (g *Gateway) serveRoutes(ctx *fasthttp.RequestCtx) {
	rt := g.routing.Load()
	ctx.SetContentType("text/plain; charset=utf-8")
	if rt == nil {
		ctx.SetBodyString("no route table yet\n")
		return
	}
	var sb strings.Builder
	sb.WriteString(rt.tbl.String())
	sb.WriteString("\nREVISION INSTANCES (this gateway's view)\n")
	for _, r := range rt.revs {
		s := r.stats()
		fmt.Fprintf(&sb, "%s  ready=%d in_flight=%d queued=%d held=%d completed=%d\n", r.key, s.Ready, s.InFlight, s.Queued, s.Held, r.requests.Load())
		r.mu.Lock()
		for _, in := range r.pool.Instances() {
			fmt.Fprintf(&sb, "  %s  %s  consul=%s probed=%v in_flight=%d limit=%d down=%v\n", in.ID, in.Backend.addr, in.Backend.status, in.Backend.probedOK.Load(), in.InFlight(), in.Limit(), in.Down())
		}
		for _, in := range r.candidates {
			fmt.Fprintf(&sb, "  %s  %s  consul=%s (starting)\n", in.ID, in.Backend.addr, in.Backend.status)
		}
		r.mu.Unlock()
	}
	ctx.SetBodyString(sb.String())
}

type fasthttpLogger struct{ l *zap.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug("fasthttp", zap.String("msg", fmt.Sprintf(format, args...)))
}
