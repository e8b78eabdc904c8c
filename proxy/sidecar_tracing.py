"""Sidecar client spans: one CLIENT span per outbound call (retries included).

Inbound requests get the engine's SERVER span (`proxy.tracing.TracingPolicy`). Outbound, the span
continues the trace the local service forwarded (`traceparent`) and becomes the parent the callee's
sidecar sees, so one trace runs gateway -> sidecar -> service -> sidecar -> ... Client spans carry
`peer.service` (the callee), from which the pipeline derives service edges, and what the policies
recorded (`gatewatch.breaker.state`, `http.request.resend_count`).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from proxy.policy import CallNext, Exchange, Response
from proxy.sidecar_registry import Upstream
from proxy.tracing import parent_context, propagate_span

INSTRUMENTATION = "gatewatch.sidecar"


class ClientSpan:
    """Opens the outbound call's CLIENT span to the routed callee and ends it with the response."""

    name = "client_span"

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        upstream: Upstream = exchange.state["upstream"]
        request = exchange.request
        span = self.tracer.start_span(request.method, context=parent_context(request.headers), kind=SpanKind.CLIENT)
        propagate_span(request.headers, span)
        if span.is_recording():
            span.set_attributes({
                "http.request.method": request.method,
                "url.path": request.path,
                "peer.service": upstream.name,
                "server.address": upstream.name,
            })
            exchange.on_complete(lambda done, status: _end(span, done, status))
        return await call_next(exchange)


def _end(span: trace.Span, exchange: Exchange, status: int) -> None:
    endpoint = exchange.endpoint
    if endpoint is not None:
        span.set_attributes({"network.peer.address": endpoint.host, "network.peer.port": endpoint.port})
    span.set_attribute("http.response.status_code", status)
    span.set_attributes(exchange.attributes)
    if status >= 400:  # client spans: 4xx is an error too (HTTP semantic conventions)
        span.set_status(Status(StatusCode.ERROR))
    span.end()
