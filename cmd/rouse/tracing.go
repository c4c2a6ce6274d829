package main

import (
	"context"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// gatewayTracer is the gateway's tracer provider for --otlp-endpoint: spans batched to an
// OTLP/HTTP collector (e.g. http://127.0.0.1:4318; /v1/traces is added when the URL has
// no path), sampled at ratio for traces the gateway starts, and following the client's
// sampling decision for traces it continues (Knative's sample-rate). stop flushes what is
// buffered, within 5 s.
func gatewayTracer(endpoint string, ratio float64, id string) (tp *sdktrace.TracerProvider, stop func(), err error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, usagef("--otlp-endpoint %q: an http:// or https:// URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318", endpoint)
	}
	if ratio < 0 || ratio > 1 {
		return nil, nil, usagef("--trace-sample-ratio %v: between 0 and 1", ratio)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, nil, err
	}
	res := resource.NewSchemaless(semconv.ServiceName("rouse-gateway"), semconv.ServiceInstanceID(id))
	tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)), sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
	}, nil
}
