"""Sidecar spans: a SERVER span per inbound request, a CLIENT span per outbound call.

Both continue the W3C trace context of the request (`traceparent`) and inject their own span as
the parent for the next hop, so one trace runs gateway -> sidecar -> service -> sidecar -> ...
Client spans carry `peer.service` (the callee), from which the pipeline derives service edges,
and whatever the policies recorded (`gatewatch.breaker.state`, `http.request.resend_count`).
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider

from proxy.policy import CallNext, Exchange, Headers, Response
from proxy.sidecar_registry import Upstream

INSTRUMENTATION = "gatewatch.sidecar"


class _HeadersGetter(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = carrier.get_all(key.lower())
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier.items()]


class _HeadersSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.set(key, value)


GETTER, SETTER = _HeadersGetter(), _HeadersSetter()


def sidecar_tracer(service: str, provider: TracerProvider | None) -> Tracer:
    """The tracer of one sidecar: from its own provider (resource service.name) or the global one."""
    return (provider or trace.get_tracer_provider()).get_tracer(INSTRUMENTATION)


def _start(tracer: Tracer, exchange: Exchange, kind: SpanKind, attributes: dict[str, str | int]) -> trace.Span:
    headers = exchange.request.headers
    parent = propagate.extract(headers, getter=GETTER)
    span = tracer.start_span(exchange.request.method, context=parent, kind=kind, attributes=attributes)
    propagate.inject(headers, context=trace.set_span_in_context(span), setter=SETTER)
    return span


def _end(span: trace.Span, exchange: Exchange, status: int, error_from: int) -> None:
    span.set_attribute("http.response.status_code", status)
    for key, value in exchange.attributes.items():
        span.set_attribute(key, value)
    if status >= error_from:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


class ServerSpan:
    """Opens the inbound request's SERVER span and hands its context to the local service."""

    name = "server_span"

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        request = exchange.request
        span = _start(self.tracer, exchange, SpanKind.SERVER, {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": exchange.scheme,
            "client.address": exchange.client_address,
            "server.address": request.host,
            **_user_agent(request.headers.get_all("user-agent")),
        })
        exchange.on_complete(lambda done, status: _end(span, done, status, 500))
        return await call_next(exchange)


class ClientSpan:
    """Opens one CLIENT span per outbound call (retries included) to the routed callee."""

    name = "client_span"

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        upstream: Upstream = exchange.state["upstream"]
        request = exchange.request
        span = _start(self.tracer, exchange, SpanKind.CLIENT, {
            "http.request.method": request.method,
            "url.path": request.path,
            "peer.service": upstream.name,
            "server.address": upstream.name,
        })
        exchange.on_complete(lambda done, status: _end_client(span, done, status))
        return await call_next(exchange)


def _end_client(span: trace.Span, exchange: Exchange, status: int) -> None:
    endpoint = exchange.endpoint
    if endpoint is not None:
        span.set_attribute("network.peer.address", endpoint.host)
        span.set_attribute("network.peer.port", endpoint.port)
    _end(span, exchange, status, 400)


def _user_agent(values: Iterable[str]) -> dict[str, str]:
    for value in values:
        return {"user_agent.original": value}
    return {}
