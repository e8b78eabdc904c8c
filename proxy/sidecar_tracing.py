"""Sidecar client spans: one CLIENT span per outbound call (retries included).

Inbound requests get the engine's SERVER span (`proxy.tracing.TracingPolicy`). Outbound, the span
continues the trace the local service forwarded (`traceparent`) and becomes the parent the callee's
sidecar sees, so one trace runs gateway -> sidecar -> service -> sidecar -> ... Client spans carry
`peer.service` (the callee), from which the pipeline derives service edges, and what the policies
recorded (`gatewatch.breaker.state`, `http.request.resend_count`).

With an SDK tracer the span is recorded like the server span (`proxy.tracing.start_recorded`: one
finished `ReadableSpan` handed to the processors, no live `Span`); other tracers take `start_span`.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from proxy.policy import CallNext, Exchange, Response
from proxy.sidecar_registry import Upstream
from proxy.tracing import end_recorded, parent_context, propagate_span, sdk_tracer, start_recorded

INSTRUMENTATION = "gatewatch.sidecar"


class ClientSpan:
    """Opens the outbound call's CLIENT span to the routed callee and ends it with the response."""

    name = "client_span"

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._sdk = sdk_tracer(tracer)

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        upstream: Upstream = exchange.state["upstream"]
        request = exchange.request
        if self._sdk is not None:
            _start_recorded(self._sdk, exchange, upstream)
            return await call_next(exchange)
        span = self.tracer.start_span(request.method, context=parent_context(request.headers), kind=SpanKind.CLIENT)
        propagate_span(request.headers, span)
        if span.is_recording():
            span.set_attributes(_start_attributes(exchange, upstream))
            exchange.on_complete(lambda done, status: _end(span, done, status))
        return await call_next(exchange)


def _start_recorded(tracer: sdk_trace.Tracer, exchange: Exchange, upstream: Upstream) -> None:
    """Take the client span's ids and sampling decision now; record it when the call completes."""
    request = exchange.request
    started = start_recorded(tracer, request.headers, request.method, SpanKind.CLIENT)
    if started is None:
        return
    start_attributes = _start_attributes(exchange, upstream)

    def finish(done: Exchange, status: int) -> None:
        attributes = {**start_attributes, **_end_attributes(done, status)}
        end_recorded(tracer, started, request.method, SpanKind.CLIENT, attributes, status >= 400)

    exchange.on_complete(finish)


def _start_attributes(exchange: Exchange, upstream: Upstream) -> dict[str, Any]:
    """What the client span knows once routed: the call and the callee."""
    request = exchange.request
    return {
        "http.request.method": request.method,
        "url.path": request.path,
        "peer.service": upstream.name,
        "server.address": upstream.name,
    }


def _end_attributes(exchange: Exchange, status: int) -> dict[str, Any]:
    """What the call's outcome adds: the endpoint used, the status, what the policies recorded."""
    attributes: dict[str, Any] = {}
    endpoint = exchange.endpoint
    if endpoint is not None:
        attributes["network.peer.address"] = endpoint.host
        attributes["network.peer.port"] = endpoint.port
    attributes["http.response.status_code"] = status
    attributes.update(exchange.attributes)
    return attributes


def _end(span: trace.Span, exchange: Exchange, status: int) -> None:
    span.set_attributes(_end_attributes(exchange, status))
    if status >= 400:  # client spans: 4xx is an error too (HTTP semantic conventions)
        span.set_status(Status(StatusCode.ERROR))
    span.end()
