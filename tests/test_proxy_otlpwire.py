"""The proxies' direct OTLP encoder produces the same ExportTraceServiceRequest as the SDK's."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from proxy.otlpwire import encode_request, encode_resource, encode_scope
from proxy.policy import AttributeValue
from proxy.spans import CLIENT, SERVER, FinishedSpan, Parent

RESOURCE: dict[str, AttributeValue] = {"service.name": "gw", "telemetry.sdk.language": "python", "n": 3}
SCOPE = "gatewatch.proxy"
ATTRIBUTES: dict[str, AttributeValue] = {
    "http.request.method": "GET", "http.response.status_code": 200, "ok": True, "ratio": 0.25, "neg": -7,
    "unicode": "héllo ✓",
}


def _ours(**overrides: object) -> FinishedSpan:
    fields: dict[str, object] = {
        "name": "GET /api/*", "kind": SERVER, "trace_id": 0x1234 << 64 | 0xABCD, "span_id": 0x42, "parent": None,
        "start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_000_001_000_000, "attributes": ATTRIBUTES,
        "error": False,
    }
    fields.update(overrides)
    return FinishedSpan(**fields)  # type: ignore[arg-type]


def _sdk(span: FinishedSpan) -> ReadableSpan:
    """The SDK span a proxy's span stands for: remote parent, tracestate inherited from it."""
    parent = span.parent
    state = TraceState.from_header([parent.trace_state]) if parent is not None and parent.trace_state else None
    return ReadableSpan(
        name=span.name, kind=SpanKind(span.kind - 1), attributes=dict(span.attributes),
        context=SpanContext(span.trace_id, span.span_id, False, TraceFlags(1), state),
        parent=SpanContext(span.trace_id, parent.span_id, True, TraceFlags(parent.flags)) if parent else None,
        resource=Resource(RESOURCE), instrumentation_scope=InstrumentationScope(SCOPE),
        status=Status(StatusCode.ERROR if span.error else StatusCode.UNSET),
        start_time=span.start_ns, end_time=span.end_ns,
    )


def _same(spans: list[FinishedSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_request(spans, encode_resource(RESOURCE), encode_scope(SCOPE)))
    assert ours == encode_spans([_sdk(span) for span in spans])


def test_root_and_remote_parent_spans_encode_like_the_sdk() -> None:
    _same([_ours()])
    _same([_ours(parent=Parent(0x1234 << 64 | 0xABCD, 0x99, 1, "vendor=v1,other=x"))])
    _same([_ours(parent=Parent(0x1234 << 64 | 0xABCD, 0x99, 1, ""))])


def test_errors_kinds_and_empty_attributes_encode_like_the_sdk() -> None:
    _same([_ours(error=True), _ours(kind=CLIENT, attributes={}), _ours(kind=CLIENT, error=True)])


def test_batches_and_long_values_encode_like_the_sdk() -> None:
    _same([_ours(span_id=n + 1, name=f"GET /{n}") for n in range(40)])
    _same([_ours(attributes={"url.path": "/" + "x" * 70_000, "big": 1 << 62, "neg": -(1 << 40)})])  # long varints


def test_a_value_that_is_not_a_scalar_is_sent_as_text() -> None:
    request = ExportTraceServiceRequest.FromString(encode_request(
        [_ours(attributes={"odd": ("a", 1)})], encode_resource(RESOURCE), encode_scope(SCOPE)))
    value = request.resource_spans[0].scope_spans[0].spans[0].attributes[0].value
    assert value.string_value == "('a', 1)"


def test_one_key_with_values_of_several_types_and_many_values_encodes_like_the_sdk() -> None:
    """Cached encodings are told apart by type ("1", 1, True) and stay right after the caches
    fill up and are cleared (far more paths than a cache holds)."""
    typed = [_ours(attributes={"v": value}) for value in ("1", 1, True, 1.0, "True")]
    many = [_ours(attributes={"url.path": f"/items/{n}", "n": n}) for n in range(5000)]
    _same(typed)
    _same(many)
    _same(typed + many[:10])
