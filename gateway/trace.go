package gateway

import (
	"context"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/rouse-run/rouse/gateway/balance"
)

// Tracing (Config.TracerProvider): each routed request gets a server span "rouse.gateway"
// that continues the client's W3C traceparent (or starts a trace), and a child
// "rouse.wait" for the time it waited for a slot — a cold start when its revision had no
// ready instance, a queue otherwise. The instance gets a traceparent naming the gateway's
// span, so its own spans hang below. Parsing the client's traceparent is OTel's
// propagator's (the reference, W3C Trace Context), over the first value as net/http's
// Header.Get would give it. Off (no provider), nothing here runs: the request path only
// tests tracer for nil.

// tracerName is the instrumentation scope of the gateway's spans.
const tracerName = "github.com/rouse-run/rouse/gateway"

// reqTrace is one request's span and the traceparent to send on; the zero value is
// tracing off.
type reqTrace struct {
	span  trace.Span
	tp    []byte
	start time.Time
	cold  bool // the revision had no ready instance when the request arrived
}

// startTrace starts the request's span at start; get reads the client's first value of
// a field, target is the request target. rev is the routed revision.
func (g *Gateway) startTrace(start time.Time, rev *revision, method, host, target string, get func(string) string) reqTrace {
	path, _, _ := strings.Cut(target, "?")
	ctx := propagation.TraceContext{}.Extract(context.Background(), getter(get))
	_, span := g.tracer.Start(ctx, "rouse.gateway", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start),
		trace.WithAttributes(
			attribute.String("http.request.method", method),
			attribute.String("server.address", host),
			attribute.String("url.path", path),
			attribute.String("rouse.namespace", rev.ns),
			attribute.String("rouse.service", rev.svc),
			attribute.String("rouse.revision", rev.name),
		))
	_, _, ready := rev.pool.Stats()
	return reqTrace{span: span, tp: traceparent(span.SpanContext()), start: start, cold: ready == 0}
}

// endTrace ends t's span at now with the request's outcome: the instance that served it,
// its status, and the wait (cold) as a child span.
func (g *Gateway) endTrace(t reqTrace, in *balance.Instance[*backend], status int, cold time.Duration, werr error) {
	if t.span == nil {
		return
	}
	now, start := g.clk.Now(), t.start
	if cold > 0 {
		ctx := trace.ContextWithSpan(context.Background(), t.span)
		_, w := g.tracer.Start(ctx, "rouse.wait", trace.WithTimestamp(start),
			trace.WithAttributes(attribute.Bool("rouse.cold_start", t.cold)))
		w.End(trace.WithTimestamp(start.Add(cold)))
	}
	attrs := []attribute.KeyValue{attribute.Int("http.response.status_code", status), attribute.Bool("rouse.cold_start", t.cold && cold > 0)}
	if in != nil {
		attrs = append(attrs, attribute.String("rouse.instance", in.Backend.addr))
	}
	if cold > 0 {
		attrs = append(attrs, attribute.Int64("rouse.wait_ms", cold.Milliseconds()))
	}
	t.span.SetAttributes(attrs...)
	if status >= 500 {
		t.span.SetStatus(codes.Error, http.StatusText(status))
	}
	if werr != nil {
		t.span.RecordError(werr)
	}
	t.span.End(trace.WithTimestamp(now))
}

// traceparent is sc as a W3C traceparent value (version 00).
func traceparent(sc trace.SpanContext) []byte {
	var c carrier
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), &c)
	return []byte(c.tp)
}

// getter reads the client's fields for the propagator.
type getter func(string) string

func (f getter) Get(key string) string { return f(key) }
func (f getter) Set(string, string)    {}
func (f getter) Keys() []string        { return nil }

// carrier takes the traceparent the propagator writes.
type carrier struct{ tp string }

func (c *carrier) Get(string) string { return "" }
func (c *carrier) Set(key, value string) {
	if key == "traceparent" {
		c.tp = value
	}
}
func (c *carrier) Keys() []string { return nil }
