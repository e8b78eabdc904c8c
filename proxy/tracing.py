"""One OpenTelemetry server span per request, W3C traceparent in and out, OTLP/HTTP export."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.otlpexport import WireOTLPSpanExporter
from proxy.policy import CallNext, Exchange, Headers, Response

_PROPAGATOR = TraceContextTextMapPropagator()
_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


# Spans per OTLP export request of a proxy (16/32/64 trade-off measured in README Proxy performance).
PROXY_EXPORT_BATCH = 32


def make_tracer_provider(
    service_name: str, endpoint: str, sample_ratio: float = 1.0, exporter: SpanExporter | None = None,
    export_batch_size: int = PROXY_EXPORT_BATCH,
) -> TracerProvider:
    """A provider exporting to `endpoint` (OTLP/HTTP base URL) in batches, with a parent-based sampler.

    The export thread holds the GIL while it encodes a batch (~7 us a span), stalling the event loop
    that long: a smaller `export_batch_size` trades more export requests for shorter stalls (512
    spans held it ~4 ms and set the proxies' p99).
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    exporter = exporter or WireOTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=8192, max_export_batch_size=export_batch_size),
    )
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
    propagate_context(headers, span.get_span_context())


def propagate_context(headers: Headers, context: SpanContext) -> None:
    """Make the span with this context the parent the next hop sees (sets `traceparent`)."""
    if context.is_valid:
        headers.set("traceparent", f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}")


def sdk_tracer(tracer: trace.Tracer) -> sdk_trace.Tracer | None:
    """`tracer` if it is the SDK's (spans can be recorded without a live Span), else None."""
    return tracer if type(tracer) is sdk_trace.Tracer else None


class RecordedStart(NamedTuple):
    """What a recorded span fixes when it starts: identity, parent, start time, sampler attributes."""

    context: SpanContext
    parent: SpanContext | None
    start_ns: int
    initial: dict[str, Any] | None


def start_recorded(tracer: sdk_trace.Tracer, headers: Headers, name: str, kind: SpanKind) -> RecordedStart | None:
    """The SDK's start_span minus the Span: ids and sampling decision, `traceparent` set in `headers`.

    None when the span is not recorded (tracer disabled or not sampled; the context still propagates).
    """
    if not tracer._is_enabled():
        return None
    start = time.time_ns()
    context = parent_context(headers)
    parent: SpanContext | None = None
    if context is not None:
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid:
            parent = None
    trace_id = parent.trace_id if parent is not None else tracer.id_generator.generate_trace_id()
    sampling = tracer.sampler.should_sample(context, trace_id, name, kind)
    flags = _SAMPLED if sampling.decision.is_sampled() else _NOT_SAMPLED
    if parent.trace_flags.random_trace_id if parent is not None else tracer.id_generator.is_trace_id_random():
        flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
    span_context = SpanContext(trace_id, tracer.id_generator.generate_span_id(), False, flags, sampling.trace_state)
    propagate_context(headers, span_context)
    if not sampling.decision.is_recording():
        return None
    initial = dict(sampling.attributes) if sampling.attributes else None
    return RecordedStart(span_context, parent, start, initial)


def end_recorded(
    tracer: sdk_trace.Tracer, started: RecordedStart, name: str, kind: SpanKind,
    attributes: dict[str, Any], error: bool,
) -> None:
    """Hand the finished span to the provider's span processors (batch export)."""
    if started.initial:
        attributes = {**started.initial, **attributes}  # the sampler's attributes, as the SDK span has them
    span = ReadableSpan(
        name=name, context=started.context, parent=started.parent, resource=tracer.resource,
        attributes=attributes, kind=kind, status=_ERROR if error else _UNSET, start_time=started.start_ns,
        end_time=time.time_ns(), instrumentation_scope=tracer._instrumentation_scope,
    )
    tracer.span_processor.on_end(span)


class TracingPolicy:
    """Outermost policy: starts the server span, forwards traceparent, ends the span on completion.

    With an SDK tracer the span is recorded as the SDK would (its sampler, id generator, resource,
    scope and span processors) but without the live `Span` object: the ids and sampling decision
    are taken when the request arrives and one finished `ReadableSpan` goes to the span processor
    when the response is written. That is a third of the SDK span's cost (no locks, no per-value
    attribute validation: the engine's attributes are already scalars), and it is paid per request.
    Other tracers (the API's no-op one, test doubles) take the regular `start_span` path.
    """

    name = "tracing"

    def __init__(self, tracer: trace.Tracer, route_of: Callable[[Exchange], str | None]) -> None:
        self.tracer = tracer
        self.route_of = route_of
        self._sdk = sdk_tracer(tracer)

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        if self._sdk is not None:
            self._start_recorded(self._sdk, exchange)
            return await call_next(exchange)
        request = exchange.request
        span = self.tracer.start_span(request.method, context=parent_context(request.headers), kind=SpanKind.SERVER)
        propagate_span(request.headers, span)
        if span.is_recording():
            exchange.on_complete(lambda done, status: self._end(span, done, status))
        return await call_next(exchange)

    def _start_recorded(self, tracer: sdk_trace.Tracer, exchange: Exchange) -> None:
        """Take the span's identity and sampling decision now; record it when the response is written."""
        request = exchange.request
        started = start_recorded(tracer, request.headers, request.method, SpanKind.SERVER)
        if started is not None:
            def finish(done: Exchange, status: int) -> None:
                attributes, name = self._attributes(done, status)
                end_recorded(tracer, started, name, SpanKind.SERVER, attributes, status >= 500)

            exchange.on_complete(finish)

    def _attributes(self, exchange: Exchange, status: int) -> tuple[dict[str, str | bool | int | float], str]:
        """The server span's attributes and name (`METHOD route` once routed)."""
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
        name = request.method
        if route is not None:
            attributes["http.route"] = route
            name = f"{request.method} {route}"
        attributes.update(exchange.attributes)
        return attributes, name

    def _end(self, span: trace.Span, exchange: Exchange, status: int) -> None:
        attributes, name = self._attributes(exchange, status)
        span.update_name(name)
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
