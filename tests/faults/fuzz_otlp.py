"""Fuzz targets for OTLP decoding: the collector's request path (Content-Type, Content-Encoding,
protobuf/JSON decode, validation, per-trace split) and the pipeline's message decode.

Collector invariant: a body is accepted (every accepted span in exactly one message under the
size limit, and each message decodes in the pipeline) or refused with a RequestRejected; nothing
else escapes. Pipeline invariant: a message decodes whole or raises PoisonMessage, leaving the
batch's columns consistent either way.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import cramjam
import lz4.frame
from google.protobuf import json_format
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from collector.codec import zstd
from gatewatch.spanlog import LogProducer, Message

MAX_BODY = 256 * 1024
MAX_MESSAGE = 4096  # small, so the split-by-size path runs often


class CollectingProducer(LogProducer):
    """A span log that keeps what it was sent."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, messages: Sequence[Message], timeout_s: float = 10.0) -> None:
        self.messages.extend(messages)

    def healthy(self) -> bool:
        return True


class CollectorFuzzer:
    """The collector's HTTP request path minus the socket: headers + body -> outcome or refusal."""

    def __init__(self) -> None:
        from collector.ingest import IngestLimits, Ingestor
        from collector.metrics import CollectorMetrics
        from collector.readiness import SpanLogReadiness

        self.producer = CollectingProducer()
        limits = IngestLimits(max_message_bytes=MAX_MESSAGE)
        self.ingestor = Ingestor(self.producer, SpanLogReadiness(self.producer), CollectorMetrics(), limits)

    def run(self, body: bytes, content_type: str, content_encoding: str) -> str:
        """'accepted', or the refusal's reason; raises on anything else."""
        from collector.codec import decode_request, decompress, encoding_of
        from collector.errors import RequestRejected

        self.producer.messages.clear()
        try:
            encoding = encoding_of(content_type)
            request = decode_request(decompress(body, content_encoding, MAX_BODY), encoding)
            outcome = self.ingestor.export(request, "http")
        except RequestRejected as exc:
            assert self.producer.messages == [], "a refused request still wrote to the span log"
            return exc.reason
        check_messages(self.producer.messages, outcome.accepted)
        return "accepted"


def check_messages(messages: list[Message], accepted: int) -> None:
    """Every accepted span is in exactly one message, under the limit, decodable by the pipeline."""
    from pipelines.columns import SpanColumns
    from pipelines.decode import decode_into

    columns = SpanColumns()
    for message in messages:
        assert len(message.value) <= MAX_MESSAGE, f"message of {len(message.value)} bytes over the limit"
        assert message.key and len(message.key) == 32, f"message key {message.key!r} is not a hex trace id"
        decode_into(message.value, columns)
    assert len(columns) == accepted, f"{accepted} spans accepted, {len(columns)} in the messages"
    assert all(len(span_id) == 16 for span_id in columns.span_ids), "an accepted span has no valid span id"


def pipeline_decode(data: bytes) -> int:
    """Decode one span-log message into a batch that already holds a span; -1 for poison."""
    from pipelines.columns import SpanColumns
    from pipelines.decode import PoisonMessage, decode_into

    columns = SpanColumns()
    decode_into(_seed_message(), columns)
    try:
        added = decode_into(data, columns)
    except PoisonMessage:
        assert len(columns) == 1, "a poison message left spans behind in the batch"
        added = -1
    rows = len(columns)
    for name in ("trace_ids", "span_ids", "span_names", "service_names", "status_codes", "durations"):
        assert len(getattr(columns, name)) == rows, f"column {name} out of step"
    for mapped in (columns.resource_attributes, columns.span_attributes):
        assert len(mapped.offsets) == rows and len(mapped.keys) == len(mapped.values)
    assert len(columns.events.offsets) == rows and len(columns.links.offsets) == rows
    columns.native()  # the block the pipeline inserts must build too
    return added


def _seed_message() -> bytes:
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="seed", start_time_unix_nano=1, end_time_unix_nano=2)
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    return request.SerializeToString()


# --- strategies --------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=20) | st.sampled_from(["service.name", "", "\x00", "é" * 5])
_u64 = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63, 2**64 - 1])
_doubles = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, -0.0, 1e308])


def _any_values() -> st.SearchStrategy[AnyValue]:
    leaves = st.one_of(
        _text.map(lambda v: AnyValue(string_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: AnyValue(int_value=v)),
        _doubles.map(lambda v: AnyValue(double_value=v)),
        st.binary(max_size=16).map(lambda v: AnyValue(bytes_value=v)),
        st.just(AnyValue()),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
            st.lists(st.tuples(_text, inner), max_size=3).map(
                lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs]))
            ),
        ),
        max_leaves=6,
    )


_attributes = st.lists(st.builds(KeyValue, key=_text, value=_any_values()), max_size=4)
_ids16 = st.sampled_from([16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)) | st.binary(max_size=20)
_ids8 = st.binary(min_size=8, max_size=8) | st.binary(max_size=10)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    """One span with random, sometimes invalid, ids, times, kinds and attributes."""
    span = Span(
        trace_id=draw(st.sampled_from([b"\xab" * 16, b"\xcd" * 16]) | _ids16),
        span_id=draw(_ids8),
        parent_span_id=draw(st.just(b"") | _ids8),
        name=draw(_text),
        kind=cast("Span.SpanKind.ValueType", draw(st.integers(0, 7))),  # 6 and 7: unknown kinds, on purpose
        start_time_unix_nano=draw(_u64),
        end_time_unix_nano=draw(_u64),
        attributes=draw(_attributes),
        status=Status(code=cast("Status.StatusCode.ValueType", draw(st.integers(0, 4))), message=draw(_text)),
        trace_state=draw(_text),
    )
    for _ in range(draw(st.integers(0, 2))):
        span.events.add(time_unix_nano=draw(_u64), name=draw(_text), attributes=draw(_attributes))
    for _ in range(draw(st.integers(0, 2))):
        span.links.add(trace_id=draw(_ids16), span_id=draw(_ids8), attributes=draw(_attributes))
    return span


@st.composite
def export_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """A request of 0-3 resources, each with 0-2 scopes of 0-6 spans."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        resource = ResourceSpans(resource=Resource(attributes=draw(_attributes)), schema_url=draw(_text))
        for _ in range(draw(st.integers(0, 2))):
            scope = InstrumentationScope(name=draw(_text), version=draw(_text))
            resource.scope_spans.append(ScopeSpans(scope=scope, spans=draw(st.lists(spans(), max_size=6))))
        request.resource_spans.append(resource)
    return request


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few byte-level edits: truncation, flips, insertions, duplication."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "dup"]))
        at = draw(st.integers(0, len(out)))
        if op == "truncate":
            del out[at:]
        elif op == "flip" and out:
            out[min(at, len(out) - 1)] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            out += out[: at]
    return bytes(out)


def _json(request: ExportTraceServiceRequest) -> bytes:
    document = json_format.MessageToDict(request)
    _ids_to_hex(document)
    return json_format.json.dumps(document).encode()


def _ids_to_hex(node: Any) -> None:
    import base64

    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _ids_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _ids_to_hex(item)


@st.composite
def collector_bodies(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """(body, Content-Type, Content-Encoding) as a hostile or sloppy OTLP client sends them."""
    request = draw(export_requests())
    kind = draw(st.sampled_from(["proto", "proto", "json", "noise"]))
    if kind == "proto":
        body, content_type = request.SerializeToString(), "application/x-protobuf"
    elif kind == "json":
        body, content_type = _json(request), "application/json"
    else:
        body = draw(st.binary(max_size=300))
        content_type = draw(st.sampled_from(["application/x-protobuf", "application/json", "text/plain", ""]))
    body = draw(mutated(body)) if draw(st.booleans()) else body
    encoding = draw(st.sampled_from(["", "", "identity", "br", "gzip, gzip", *_COMPRESSORS]))
    if encoding in _COMPRESSORS:
        body = _COMPRESSORS[encoding](body)
        if draw(st.integers(0, 4)) == 0:
            body = draw(mutated(body))
    return body, content_type, encoding


_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress, "deflate": zlib.compress, "zstd": zstd.compress, "lz4": lz4.frame.compress,
    "snappy": lambda body: bytes(cramjam.snappy.compress_raw(body)),  # the block format
    "x-snappy-framed": lambda body: bytes(cramjam.snappy.compress(body)),
}


def compression_bomb(encoding: str, expanded: int) -> bytes:
    """A small body in `encoding` (one of the compressors above) that expands to `expanded` zero bytes."""
    return _COMPRESSORS[encoding](bytes(expanded))


@st.composite
def span_log_messages(draw: st.DrawFn) -> bytes:
    """What the pipeline may find on the span log: requests, mutated requests, noise."""
    kind = draw(st.sampled_from(["proto", "mutated", "noise"]))
    if kind == "noise":
        return bytes(draw(st.binary(max_size=300)))
    data = draw(export_requests()).SerializeToString()
    return draw(mutated(data)) if kind == "mutated" else data
