"""The proxies' direct OTLP encoder produces the same ExportTraceServiceRequest as the SDK's."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from proxy.otlpwire import encode_request


def _span(**overrides: object) -> ReadableSpan:
    fields: dict[str, object] = {
        "name": "GET /api/*",
        "context": SpanContext(0x1234 << 64 | 0xABCD, 0x42, False, TraceFlags(1)),
        "parent": None,
        "resource": Resource.create({"service.name": "gw"}),
        "attributes": {"http.request.method": "GET", "http.response.status_code": 200, "ok": True,
                       "ratio": 0.25, "neg": -7, "unicode": "héllo ✓"},
        "kind": SpanKind.SERVER,
        "start_time": 1_700_000_000_000_000_000,
        "end_time": 1_700_000_000_001_000_000,
        "instrumentation_scope": InstrumentationScope("gatewatch.proxy"),
    }
    fields.update(overrides)
    return ReadableSpan(**fields)  # type: ignore[arg-type]


def _same(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    assert ours == encode_spans(spans)


def test_server_span_root_and_remote_parent_encode_like_the_sdk() -> None:
    remote = SpanContext(0x1234 << 64 | 0xABCD, 0x99, True, TraceFlags(1))
    _same([_span()])
    _same([_span(parent=remote, context=SpanContext(remote.trace_id, 7, False, TraceFlags(1),
                                                    TraceState([("vendor", "v1")])))])
    _same([_span(status=Status(StatusCode.ERROR)), _span(status=Status(StatusCode.ERROR, "boom"))])
    _same([_span(kind=SpanKind.CLIENT, attributes={}), _span(kind=SpanKind.INTERNAL, attributes=None)])


def test_mixed_resources_scopes_and_fallback_fields_encode_like_the_sdk() -> None:
    other = Resource.create({"service.name": "sidecar-a"})
    spans = [
        _span(), _span(resource=other), _span(instrumentation_scope=InstrumentationScope("x", "1.0", "https://s")),
        _span(attributes={"list": ["a", "b"], "n": 1}),  # sequence value: the SDK encoder's path
        _span(events=[Event("retry", {"n": 1}, 5)]),
        _span(links=[Link(SpanContext(1, 2, False))]),
        _span(resource=Resource({"service.name": "s"}, "https://schema")),
    ]
    _same(spans)


def test_scopes_resources_and_long_values_encode_like_the_sdk() -> None:
    scope = InstrumentationScope("gatewatch.sidecar", "2.1", attributes={"tier": "mesh", "n": 3})
    spans = [
        _span(instrumentation_scope=scope),
        _span(instrumentation_scope=InstrumentationScope("bare")),
        _span(resource=Resource({"service.name": "s", "ports": [1, 2]})),  # non-scalar: SDK resource encoder
        _span(attributes={"url.path": "/" + "x" * 70_000, "big": 1 << 62, "neg": -(1 << 40)}),  # multi-byte varints
    ]
    _same(spans)
