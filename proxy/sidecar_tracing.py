"""Sidecar client spans: one CLIENT span per outbound call (retries included).

Inbound requests get the engine's SERVER span (`proxy.tracing.TracingPolicy`). Outbound, the span
continues the trace the local service forwarded (`traceparent`) and becomes the parent the callee's
sidecar sees, so one trace runs gateway -> sidecar -> service -> sidecar -> ... Client spans carry
`peer.service` (the callee), from which the pipeline derives service edges, and what the policies
recorded (`gatewatch.breaker.state`, `http.request.resend_count`).
"""

from __future__ import annotations

from typing import Final

from proxy.policy import AttributeValue, CallNext, Exchange, Response
from proxy.sidecar_registry import Upstream
from proxy.spans import CLIENT, Started, Tracer

INSTRUMENTATION: Final = "gatewatch.sidecar"


class ClientSpan:
    """Opens the outbound call's CLIENT span to the routed callee and ends it with the response."""

    name = "client_span"

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        started = self.tracer.start(exchange.request.headers)
        if started is not None:
            upstream: Upstream = exchange.state["upstream"]
            start_attributes = _start_attributes(exchange, upstream)
            exchange.on_complete(lambda done, status: self._end(started, start_attributes, done, status))
        return await call_next(exchange)

    def _end(self, started: Started, start_attributes: dict[str, AttributeValue], exchange: Exchange,
             status: int) -> None:
        attributes = {**start_attributes, **_end_attributes(exchange, status)}
        # client spans: 4xx is an error too (HTTP semantic conventions)
        self.tracer.end(started, exchange.request.method, CLIENT, attributes, status >= 400)


def _start_attributes(exchange: Exchange, upstream: Upstream) -> dict[str, AttributeValue]:
    """What the client span knows once routed: the call and the callee."""
    request = exchange.request
    return {
        "http.request.method": request.method,
        "url.path": request.path,
        "peer.service": upstream.name,
        "server.address": upstream.name,
    }


def _end_attributes(exchange: Exchange, status: int) -> dict[str, AttributeValue]:
    """What the call's outcome adds: the endpoint used, the status, what the policies recorded."""
    attributes: dict[str, AttributeValue] = {}
    endpoint = exchange.endpoint
    if endpoint is not None:
        attributes["network.peer.address"] = endpoint.host
        attributes["network.peer.port"] = endpoint.port
    attributes["http.response.status_code"] = status
    attributes.update(exchange.attributes)
    return attributes
