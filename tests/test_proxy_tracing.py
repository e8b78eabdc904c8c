"""The engine's recorded server span (SDK ids, sampler and processors, no live Span object) matches
the SDK's own span for the same request: name, kind, attributes, parent, status, propagation."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from proxy.policy import Exchange, Headers, Request, Response
from proxy.tracing import TracingPolicy

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _provider(ratio: float = 1.0) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _run(policy: TracingPolicy, headers: list[tuple[str, str]], status: int) -> tuple[Request, ReadableSpan | None]:
    request = Request("GET", "/api/items", "", Headers(headers))
    exchange = Exchange(request, "203.0.113.7", 4000)

    async def upstream(done: Exchange) -> Response:
        done.set_attribute("gatewatch.ratelimit.outcome", "allowed")
        return Response(status)

    asyncio.run(policy.handle(exchange, upstream))
    exchange.complete(status)
    return request, None


def _both(headers: list[tuple[str, str]], status: int, ratio: float = 1.0) -> list[tuple[Request, list[ReadableSpan]]]:
    out = []
    for fast in (True, False):
        provider, exporter = _provider(ratio)
        policy = TracingPolicy(provider.get_tracer("gatewatch.proxy"), lambda exchange: "/api/*")
        if not fast:
            policy._sdk = None  # the SDK's start_span path
        request, _ = _run(policy, list(headers), status)
        out.append((request, list(exporter.get_finished_spans())))
    return out


def _shape(span: ReadableSpan) -> tuple[object, ...]:
    return (span.name, span.kind, dict(span.attributes or {}), span.status.status_code,
            span.parent.span_id if span.parent else None, span.parent.is_remote if span.parent else None,
            span.resource.attributes.get("service.name"),
            span.instrumentation_scope.name if span.instrumentation_scope else None)


def test_root_span_matches_the_sdk_span() -> None:
    (fast_request, fast), (_, slow) = _both([("host", "api.local:8080"), ("user-agent", "curl/8")], 200)
    assert len(fast) == len(slow) == 1
    assert _shape(fast[0]) == _shape(slow[0])
    assert fast[0].name == "GET /api/*" and fast[0].kind is SpanKind.SERVER
    attributes = dict(fast[0].attributes or {})
    assert attributes["client.address"] == "203.0.113.7"
    assert attributes["gatewatch.ratelimit.outcome"] == "allowed"
    assert fast[0].start_time is not None and fast[0].end_time is not None and fast[0].end_time >= fast[0].start_time
    context = fast[0].context
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert fast_request.headers.get("traceparent") == expected


def test_remote_parent_is_continued_and_errors_marked() -> None:
    (fast_request, fast), (_, slow) = _both([("traceparent", PARENT), ("tracestate", "v=1")], 503)
    assert _shape(fast[0]) == _shape(slow[0])
    assert fast[0].context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert fast[0].parent is not None and fast[0].parent.span_id == int("b7ad6b7169203331", 16)
    assert fast[0].status.status_code is StatusCode.ERROR
    assert str(fast[0].context.trace_state) == str(slow[0].context.trace_state)
    assert (fast_request.headers.get("traceparent") or "").startswith("00-0af7651916cd43dd8448eb211c80319c-")


def test_unsampled_requests_propagate_without_recording() -> None:
    (fast_request, fast), (_, slow) = _both([("traceparent", PARENT[:-2] + "00")], 200)
    assert fast == [] and slow == []
    assert (fast_request.headers.get("traceparent") or "").endswith("-00")
    (_, fast), (_, slow) = _both([], 200, ratio=0.0)
    assert fast == [] and slow == []
