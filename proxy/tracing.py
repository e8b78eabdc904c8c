"""One server span per request: W3C `traceparent` in and out, recorded by `proxy.spans`, exported
over OTLP/HTTP by `proxy.otlpexport`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from proxy.headers import HOST_NAMES
from proxy.otlpexport import WireOTLPSpanExporter
from proxy.policy import AttributeValue, CallNext, Exchange, Response
from proxy.spans import (
    SERVER,
    BatchSpanProcessor,
    OutcomeHook,
    ParentBasedRatio,
    SpanExporter,
    Started,
    Tracer,
    env_delay_s,
    resource_attributes,
)

# A proxy's export batches: the SDK's max_export_batch_size. Spans are encoded as they end (on the
# loop), so a batch only needs joining: the export thread holds the GIL for ~0.1 ms a batch, where
# encoding 512 spans there held it ~4 ms and set the p99. Fewer, larger requests cost the proxy
# and the collector less per span (README Proxy performance has the 32 vs 512 A/B).
PROXY_EXPORT_BATCH: Final = 512
# Partial batches go out after this (OTEL_BSP_SCHEDULE_DELAY overrides it): the detectors act on
# these spans within seconds, so the SDK's 5 s default would hold a quiet proxy's spans too long.
PROXY_EXPORT_DELAY_S: Final = 0.2


def make_tracer(
    service_name: str, endpoint: str, scope: str, sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None, export_batch_size: int = PROXY_EXPORT_BATCH,
    on_outcome: OutcomeHook | None = None,
) -> Tracer:
    """A tracer exporting to `endpoint` (OTLP/HTTP base URL) in batches, with a parent-based sampler."""
    exporter = exporter or WireOTLPSpanExporter(
        endpoint.rstrip("/") + "/v1/traces", resource_attributes(service_name), scope, timeout=5,
    )
    processor = BatchSpanProcessor(exporter, max_queue=8192, max_batch=export_batch_size,
                                   schedule_delay_s=env_delay_s(PROXY_EXPORT_DELAY_S), on_outcome=on_outcome)
    return Tracer(processor, ParentBasedRatio(sample_ratio))


class TracingPolicy:
    """Outermost policy: starts the server span, forwards traceparent, ends the span on completion.

    The span's ids, sampling decision and request attributes are taken when the request arrives
    (so `url.path` is the path the client asked for, before a route rewrites it); its status, route
    and name when the response is written, and then it goes to the tracer's processor.
    """

    name = "tracing"

    def __init__(self, tracer: Tracer, route_of: Callable[[Exchange], str | None]) -> None:
        self.tracer = tracer
        self.route_of = route_of

    def handle(self, exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        started = self.tracer.start(exchange.request.headers)
        if started is not None:
            exchange.attributes = _request_attributes(exchange)
            exchange.on_complete(lambda done, status: self._end(started, done, status))
        return call_next(exchange)  # unawaited: no frame of ours while the request is upstream

    def _end(self, started: Started, exchange: Exchange, status: int) -> None:
        # The exchange's dict is the span's: the request's attributes plus what the policies
        # recorded, whose values win (setdefault), as they always have. No copy: nothing records
        # an attribute once the response is out.
        attributes = exchange.attributes
        attributes.setdefault("http.response.status_code", status)
        name = exchange.request.method
        route = self.route_of(exchange)
        if route is not None:
            attributes.setdefault("http.route", route)
            name = f"{name} {route}"
        self.tracer.end(started, name, SERVER, attributes, status >= 500)


def _request_attributes(exchange: Exchange) -> dict[str, AttributeValue]:
    """The server span's attributes a request carries, under any an outer policy recorded already."""
    request = exchange.request
    attributes: dict[str, AttributeValue] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": exchange.scheme,
        "client.address": exchange.client_address,
        "server.address": HOST_NAMES[request.host],
    }
    agent = request.headers.get("user-agent")
    if agent is not None:
        attributes["user_agent.original"] = agent
    if exchange.attributes:
        attributes.update(exchange.attributes)
    return attributes
