"""OpenTelemetry traces across the services, off unless ARAGOG_OTEL_ENDPOINT names an
OTLP/gRPC collector (Jaeger, Tempo, the OpenTelemetry Collector).

One request is one trace: the router's SubmitRequest span is its root; the router stores its
W3C `traceparent` with the request (the executor picks requests up from Redis, not from a
call, so no gRPC metadata carries the context there); the executor's spans (the request,
each stage, the wait for a placement, the model call) hang below it; the executor passes
the stage's context to the scheduler inside AcquireStageRequest, whose span covers the
stage's time in the meta-queue; the model call sends `traceparent` to Triton as a header,
so a Triton started with OpenTelemetry tracing joins the trace. Log lines written inside a
span carry its `trace_id`.

Off, every call here costs a lookup of a no-op span: the API's default tracer records
nothing, and the SDK and exporter are not even imported.
"""

from __future__ import annotations

import atexit
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("aragog")
_propagator = TraceContextTextMapPropagator()
_provider: Any = None  # the SDK's TracerProvider, once setup() made one


def setup(service: str, endpoint: str, insecure: bool = True) -> bool:
    """Export this process's spans to `endpoint` (host:port) as `aragog-<service>`; no-op
    when `endpoint` is empty. Returns whether tracing is on."""
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"aragog-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint,
                                                                    insecure=insecure)))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # flushes what is still batched
    global _provider
    _provider = provider
    return True


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans still batched (a stopping service), within `timeout_s`."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def traceparent() -> str:
    """The current span's context as a W3C traceparent header value; '' outside a span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def parent(header: str) -> otel_context.Context | None:
    """The context a `traceparent` value names (None for '', or for anything longer than a
    traceparent can be: a new trace starts; a malformed one is ignored the same way)."""
    return _propagator.extract({"traceparent": header}) if 0 < len(header) <= 128 else None


def add_trace_id(_logger: Any, _name: str, event: dict) -> dict:
    """structlog processor: the trace id of the span the line is written in, if any."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
    return event
