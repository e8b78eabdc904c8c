"""The sidecar's client span: name, kind, attributes (callee, endpoint, policies), parent, status,
and the `traceparent` the callee's sidecar sees."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

from proxy.endpoints import endpoint_of
from proxy.policy import Exchange, Headers, Request, Response
from proxy.sidecar_tracing import ClientSpan
from proxy.spans import CLIENT, FinishedSpan
from tests.test_proxy_tracing import PARENT, recording_tracer


def _call(headers: Sequence[tuple[str, str]], status: int) -> tuple[Request, list[FinishedSpan]]:
    tracer, spans = recording_tracer()
    request = Request("GET", "/pay", "", Headers(headers))
    exchange = Exchange(request, "127.0.0.1", 4000)
    exchange.state["upstream"] = SimpleNamespace(name="payment")  # ClientSpan reads only the callee's name

    async def upstream(done: Exchange) -> Response:
        done.endpoint = endpoint_of("127.0.0.1:15016")
        done.set_attribute("http.request.resend_count", 1)
        done.set_attribute("gatewatch.breaker.state", "closed")
        return Response(status)

    asyncio.run(ClientSpan(tracer).handle(exchange, upstream))
    exchange.complete(status)
    return request, spans


def test_client_span_names_the_callee_and_what_the_policies_recorded() -> None:
    request, [span] = _call([("traceparent", PARENT)], 200)
    assert span.kind == CLIENT and span.name == "GET" and not span.error
    assert dict(span.attributes) == {
        "http.request.method": "GET", "url.path": "/pay", "peer.service": "payment", "server.address": "payment",
        "network.peer.address": "127.0.0.1", "network.peer.port": 15016, "http.response.status_code": 200,
        "http.request.resend_count": 1, "gatewatch.breaker.state": "closed",
    }
    assert span.parent is not None and span.parent.span_id == int("b7ad6b7169203331", 16)
    assert span.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert request.headers.get("traceparent") == f"00-{span.trace_id:032x}-{span.span_id:016x}-01"


def test_client_4xx_is_an_error_and_unsampled_calls_only_propagate() -> None:
    _, [span] = _call([], 404)
    assert span.error and span.parent is None
    request, spans = _call([("traceparent", PARENT[:-2] + "00")], 200)
    assert spans == [] and (request.headers.get("traceparent") or "").endswith("-00")
