"""Validate spans and cut an export request into one span-log message per trace.

Each message is an ExportTraceServiceRequest holding one trace's spans under their original
resource and scope (as the OpenTelemetry Collector's Kafka exporter does with
partition_traces_by_id), keyed by the trace id in lowercase hex. A trace too large for one
message is cut into several with the same key. Messages are assembled at the protobuf wire
level from each span's own encoding: sizes are then exact sums, so no message passes the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from gatewatch.spanlog import Message
from gatewatch.wire import varint

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
_MAX_LENGTH_PREFIX = 5  # a varint length below 2**35: the bound used to budget container headers
# field tags (field number << 3 | wire type 2): 1 = resource/scope, 2 = scope_spans/spans, 3 = schema_url
_TAG_1, _TAG_2, _TAG_3 = b"\x0a", b"\x12", b"\x1a"

# rejection reason (a metrics label) -> what partial_success.error_message says about it
REASONS = {
    "invalid_trace_id": "invalid trace_id (want 16 bytes, not all zero)",
    "invalid_span_id": "invalid span_id (want 8 bytes, not all zero)",
    "invalid_parent_span_id": "invalid parent_span_id (want 8 bytes or empty)",
    "span_too_large": "span larger than the span log's message limit",
    "invalid_timestamp": "timestamp past 2262 (over 2**63 ns; the store's DateTime64(9) cannot hold it)",
}
_MAX_TIME_NS = 2**63 - 1

Entry = tuple[int, int, bytes, bytes]  # (resource index, scope index, length-prefixed tag, span bytes)


_PREFIX_TABLE_SIZE = 1 << 14  # spans up to 16 KiB (almost all) take their field prefix from a table
_SPAN_PREFIXES = [_TAG_2 + varint(size) for size in range(_PREFIX_TABLE_SIZE)]


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


@dataclass
class SplitResult:
    """The messages for the span log and what was accepted or rejected on the way."""

    messages: list[Message] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        """Count one span rejected for `reason` (a REASONS key)."""
        self.rejected += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1

    @property
    def error_message(self) -> str:
        """One line for OTLP's partial_success.error_message ('' when nothing was rejected)."""
        return "; ".join(f"{count} spans rejected: {REASONS[reason]}" for reason, count in self.errors.items())


@dataclass
class _Headers:
    """Encoded resource and scope fields of a request, and what each costs a message at most."""

    resource_head: list[bytes] = field(default_factory=list)  # resource field
    resource_tail: list[bytes] = field(default_factory=list)  # schema_url field
    scope_head: list[bytes] = field(default_factory=list)
    scope_tail: list[bytes] = field(default_factory=list)
    resource_cost: list[int] = field(default_factory=list)
    scope_cost: list[int] = field(default_factory=list)


def invalid_reason(span: Span) -> str:
    """Why a span cannot be stored (a REASONS key, '' when valid): ids of the right size, not zero."""
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        return "invalid_trace_id"
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        return "invalid_span_id"
    if parent and len(parent) != 8:
        return "invalid_parent_span_id"
    # The pipeline would dead-letter these after we acknowledged them: refuse them here instead.
    if span.start_time_unix_nano > _MAX_TIME_NS or span.end_time_unix_nano > _MAX_TIME_NS or any(
        event.time_unix_nano > _MAX_TIME_NS for event in span.events
    ):
        return "invalid_timestamp"
    return ""


def split_by_trace(request: ExportTraceServiceRequest, max_message_bytes: int) -> SplitResult:
    """Group valid spans by trace into messages of at most `max_message_bytes`."""
    result = SplitResult()
    headers = _Headers()
    traces: dict[bytes, list[Entry]] = {}
    scope_index = 0
    for resource_index, resource_spans in enumerate(request.resource_spans):
        _add_resource_headers(headers, resource_spans)
        for scope_spans in resource_spans.scope_spans:
            _add_scope_headers(headers, scope_spans)
            budget = max_message_bytes - headers.resource_cost[resource_index] - headers.scope_cost[scope_index]
            for span in scope_spans.spans:
                reason = invalid_reason(span)
                if reason:
                    result.reject(reason)
                    continue
                data = span.SerializeToString()
                size = len(data)
                prefix = _SPAN_PREFIXES[size] if size < _PREFIX_TABLE_SIZE else _TAG_2 + varint(size)
                if len(prefix) + len(data) > budget:
                    result.reject("span_too_large")
                    continue
                entries = traces.get(span.trace_id)
                if entries is None:
                    entries = traces[span.trace_id] = []
                entries.append((resource_index, scope_index, prefix, data))
                result.accepted += 1
            scope_index += 1
    for trace_id, entries in traces.items():
        key = trace_id.hex().encode()
        result.messages.extend(Message(value, key) for value in _pack(entries, headers, max_message_bytes))
    return result


def _add_resource_headers(headers: _Headers, resource_spans: ResourceSpans) -> None:
    has_resource = resource_spans.HasField("resource")
    resource = _field(_TAG_1, resource_spans.resource.SerializeToString()) if has_resource else b""
    schema = _field(_TAG_3, resource_spans.schema_url.encode()) if resource_spans.schema_url else b""
    headers.resource_head.append(resource)
    headers.resource_tail.append(schema)
    headers.resource_cost.append(1 + _MAX_LENGTH_PREFIX + len(resource) + len(schema))


def _add_scope_headers(headers: _Headers, scope_spans: ScopeSpans) -> None:
    scope = _field(_TAG_1, scope_spans.scope.SerializeToString()) if scope_spans.HasField("scope") else b""
    schema = _field(_TAG_3, scope_spans.schema_url.encode()) if scope_spans.schema_url else b""
    headers.scope_head.append(scope)
    headers.scope_tail.append(schema)
    headers.scope_cost.append(1 + _MAX_LENGTH_PREFIX + len(scope) + len(schema))


def _pack(entries: list[Entry], headers: _Headers, limit: int) -> list[bytes]:
    """Cut one trace's entries (ordered by resource, then scope) into encoded messages under `limit`."""
    messages: list[bytes] = []
    chunk: list[Entry] = []
    size = 0
    last_resource = last_scope = -1
    for entry in entries:
        resource, scope, prefix, data = entry
        cost = len(prefix) + len(data)
        if resource != last_resource:
            cost += headers.resource_cost[resource] + headers.scope_cost[scope]
        elif scope != last_scope:
            cost += headers.scope_cost[scope]
        if chunk and size + cost > limit:
            messages.append(_encode(chunk, headers))
            chunk, size = [], 0
            cost = len(prefix) + len(data) + headers.resource_cost[resource] + headers.scope_cost[scope]
        chunk.append(entry)
        size += cost
        last_resource, last_scope = resource, scope
    if chunk:
        messages.append(_encode(chunk, headers))
    return messages


def _encode(chunk: list[Entry], headers: _Headers) -> bytes:
    """One ExportTraceServiceRequest from entries grouped by resource, then scope."""
    resource_fields: list[bytes] = []
    scope_fields: list[bytes] = []
    spans: list[bytes] = []
    resource = scope = -1

    def close_scope() -> None:
        scope_fields.append(_field(_TAG_2, b"".join([headers.scope_head[scope], *spans, headers.scope_tail[scope]])))
        spans.clear()

    def close_resource() -> None:
        close_scope()
        body = b"".join([headers.resource_head[resource], *scope_fields, headers.resource_tail[resource]])
        resource_fields.append(_field(_TAG_1, body))
        scope_fields.clear()

    for entry_resource, entry_scope, prefix, data in chunk:
        if entry_resource != resource and resource >= 0:
            close_resource()
        elif entry_scope != scope and scope >= 0:
            close_scope()
        resource, scope = entry_resource, entry_scope
        spans.append(prefix)
        spans.append(data)
    close_resource()
    return b"".join(resource_fields)
