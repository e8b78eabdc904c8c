"""The engine's server span: name, kind, attributes, parent, status and the `traceparent` the next
hop sees, recorded by `proxy.spans` (its pieces are compared with the SDK's in test_proxy_spans)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from proxy.policy import Exchange, Headers, Request, Response
from proxy.spans import SERVER, FinishedSpan, ParentBasedRatio, Tracer
from proxy.tracing import TracingPolicy

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Recorded:
    """A span processor that keeps every finished span."""

    def __init__(self) -> None:
        self.spans: list[FinishedSpan] = []

    def on_end(self, span: FinishedSpan) -> None:
        self.spans.append(span)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        pass


def recording_tracer(ratio: float = 1.0) -> tuple[Tracer, list[FinishedSpan]]:
    """A tracer whose finished spans land in the returned list."""
    processor = Recorded()
    return Tracer(processor, ParentBasedRatio(ratio)), processor.spans


def _run(headers: Sequence[tuple[str, str]], status: int, ratio: float = 1.0) -> tuple[Request, list[FinishedSpan]]:
    tracer, spans = recording_tracer(ratio)
    policy = TracingPolicy(tracer, lambda exchange: "/api/*")
    request = Request("GET", "/api/items", "", Headers(headers))
    exchange = Exchange(request, "203.0.113.7", 4000)

    async def upstream(done: Exchange) -> Response:
        done.set_attribute("gatewatch.ratelimit.outcome", "allowed")
        return Response(status)

    handled = policy.handle(exchange, upstream)
    assert asyncio.iscoroutine(handled)  # upstream's own, returned unawaited
    asyncio.run(handled)
    exchange.complete(status)
    return request, spans


def test_root_span_has_the_request_attributes_and_names_itself_parent() -> None:
    request, spans = _run([("host", "api.local:8080"), ("user-agent", "curl/8")], 200)
    [span] = spans
    assert span.name == "GET /api/*" and span.kind == SERVER and not span.error and span.parent is None
    assert dict(span.attributes) == {
        "http.request.method": "GET", "url.path": "/api/items", "url.scheme": "http",
        "http.response.status_code": 200, "client.address": "203.0.113.7", "server.address": "api.local",
        "user_agent.original": "curl/8", "http.route": "/api/*", "gatewatch.ratelimit.outcome": "allowed",
    }
    assert 0 < span.start_ns <= span.end_ns
    assert request.headers.get("traceparent") == f"00-{span.trace_id:032x}-{span.span_id:016x}-03"


def test_remote_parent_is_continued_and_errors_marked() -> None:
    request, [span] = _run([("traceparent", PARENT), ("tracestate", "v=1")], 503)
    assert span.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16) and span.error
    assert span.parent is not None and span.parent.span_id == int("b7ad6b7169203331", 16)
    assert span.parent.trace_state == "v=1"
    assert request.headers.get("traceparent") == f"00-0af7651916cd43dd8448eb211c80319c-{span.span_id:016x}-01"


def test_unsampled_requests_propagate_without_recording() -> None:
    request, spans = _run([("traceparent", PARENT[:-2] + "00")], 200)
    assert spans == [] and (request.headers.get("traceparent") or "").endswith("-00")
    request, spans = _run([], 200, ratio=0.0)
    assert spans == [] and (request.headers.get("traceparent") or "").endswith("-02")


def test_the_span_keeps_the_path_the_client_asked_for_and_what_policies_recorded() -> None:
    tracer, spans = recording_tracer()
    policy = TracingPolicy(tracer, lambda exchange: "/api/*")
    exchange = Exchange(Request("GET", "/api/items", "", Headers([("host", "[::1]")])), "::1")
    exchange.set_attribute("gatewatch.outer", "kept")  # recorded by a policy outside the tracing one

    async def rewriting_upstream(done: Exchange) -> Response:
        done.request.path = "/items"  # a strip_prefix route
        done.set_attribute("http.route", "/api/{id}")  # a policy's value wins over the engine's
        return Response(200)

    handled = policy.handle(exchange, rewriting_upstream)
    assert asyncio.iscoroutine(handled)  # upstream's own, returned unawaited
    asyncio.run(handled)
    exchange.complete(200)
    [span] = spans
    assert span.attributes["url.path"] == "/api/items"
    assert span.attributes["http.route"] == "/api/{id}" and span.attributes["gatewatch.outer"] == "kept"
    assert span.attributes["server.address"] == "[::1]"
