"""One OpenTelemetry server span per request, W3C traceparent in and out, OTLP/HTTP export."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.policy import CallNext, Exchange, Headers, Response

_PROPAGATOR = TraceContextTextMapPropagator()


def make_tracer_provider(
    service_name: str, endpoint: str, sample_ratio: float = 1.0, exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A provider exporting to `endpoint` (OTLP/HTTP base URL) in batches, with a parent-based sampler."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    exporter = exporter or OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192, max_export_batch_size=512))
    return provider


def parent_context(headers: Headers) -> Context | None:
    """The W3C trace context a request carries (`traceparent`/`tracestate`), or None."""
    incoming = headers.get("traceparent")
    if incoming is None:
        return None
    carrier = {"traceparent": incoming}
    state = headers.get("tracestate")
    if state is not None:
        carrier["tracestate"] = state
    return _PROPAGATOR.extract(carrier)


def propagate_span(headers: Headers, span: trace.Span) -> None:
    """Make `span` the parent the next hop sees (sets `traceparent`)."""
    context = span.get_span_context()
    if context.is_valid:
        headers.set("traceparent", f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}")


class TracingPolicy:
    """Outermost policy: starts the server span, forwards traceparent, ends the span on completion."""

    name = "tracing"

    def __init__(self, tracer: trace.Tracer, route_of: Callable[[Exchange], str | None]) -> None:
        self.tracer = tracer
        self.route_of = route_of

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        request = exchange.request
        span = self.tracer.start_span(request.method, context=parent_context(request.headers), kind=SpanKind.SERVER)
        propagate_span(request.headers, span)
        if span.is_recording():
            exchange.on_complete(lambda done, status: self._end(span, done, status))
        return await call_next(exchange)

    def _end(self, span: trace.Span, exchange: Exchange, status: int) -> None:
        request = exchange.request
        route = self.route_of(exchange)
        attributes: dict[str, str | bool | int | float] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": exchange.scheme,
            "http.response.status_code": status,
            "client.address": exchange.client_address,
            "server.address": request.host.rsplit(":", 1)[0] if request.host else "",
        }
        agent = request.headers.get("user-agent")
        if agent is not None:
            attributes["user_agent.original"] = agent
        if route is not None:
            attributes["http.route"] = route
            span.update_name(f"{request.method} {route}")
        attributes.update(exchange.attributes)
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
