"""The sidecar's recorded client span (SDK ids, sampler and processors, no live Span object) matches
the SDK's own span for the same call: name, kind, attributes, parent, status, propagation."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from proxy.endpoints import endpoint_of
from proxy.policy import Exchange, Headers, Request, Response
from proxy.sidecar_tracing import ClientSpan
from tests.test_proxy_tracing import PARENT, _provider, _shape


def _call(span_policy: ClientSpan, headers: list[tuple[str, str]], status: int) -> Request:
    request = Request("GET", "/pay", "", Headers(headers))
    exchange = Exchange(request, "127.0.0.1", 4000)
    exchange.state["upstream"] = SimpleNamespace(name="payment")  # ClientSpan reads only the callee's name

    async def upstream(done: Exchange) -> Response:
        done.endpoint = endpoint_of("127.0.0.1:15016")
        done.set_attribute("http.request.resend_count", 1)
        done.set_attribute("gatewatch.breaker.state", "closed")
        return Response(status)

    asyncio.run(span_policy.handle(exchange, upstream))
    exchange.complete(status)
    return request


def _both(headers: list[tuple[str, str]], status: int, ratio: float = 1.0) -> list[tuple[Request, list[ReadableSpan]]]:
    out = []
    for recorded in (True, False):
        provider, exporter = _provider(ratio)
        policy = ClientSpan(provider.get_tracer("gatewatch.sidecar"))
        if not recorded:
            policy._sdk = None  # the SDK's start_span path
        request = _call(policy, list(headers), status)
        out.append((request, list(exporter.get_finished_spans())))
    return out


def test_client_span_matches_the_sdk_span() -> None:
    (request, fast), (_, slow) = _both([("traceparent", PARENT)], 200)
    assert len(fast) == len(slow) == 1
    assert _shape(fast[0]) == _shape(slow[0])
    span = fast[0]
    assert span.kind is SpanKind.CLIENT and span.name == "GET"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET", "url.path": "/pay", "peer.service": "payment", "server.address": "payment",
        "network.peer.address": "127.0.0.1", "network.peer.port": 15016, "http.response.status_code": 200,
        "http.request.resend_count": 1, "gatewatch.breaker.state": "closed",
    }
    assert span.parent is not None and span.parent.span_id == int("b7ad6b7169203331", 16)
    assert span.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert request.headers.get("traceparent") == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"


def test_client_4xx_is_an_error_and_unsampled_calls_only_propagate() -> None:
    (_, fast), (_, slow) = _both([], 404)
    assert _shape(fast[0]) == _shape(slow[0]) and fast[0].status.status_code is StatusCode.ERROR
    (request, fast), (_, slow) = _both([("traceparent", PARENT[:-2] + "00")], 200)
    assert fast == [] and slow == []
    assert (request.headers.get("traceparent") or "").endswith("-00")
