"""OTLP `ExportTraceServiceRequest` bytes -> `otel_traces` columns, as the Collector's exporter maps them.

ServiceName comes from the resource's `service.name` (string values only), SpanKind and StatusCode are
pdata's names ("Server", "Error"), ids are lowercase hex (empty when absent or all zero), Duration is
end - start in ns, scope name/version fill their own columns, events and links fill the Nested columns.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.codec import decode_protobuf
from collector.errors import InvalidPayload
from pipelines.attributes import append_attributes
from pipelines.columns import SpanColumns

SPAN_KINDS = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
STATUS_CODES = {0: "Unset", 1: "Ok", 2: "Error"}
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class PoisonMessage(ValueError):
    """A span-log message that can never be stored: it goes to the dead-letter queue."""


def parse_request(data: bytes) -> ExportTraceServiceRequest:
    """Parse one message, or raise PoisonMessage if it is not a request holding spans."""
    try:
        request = decode_protobuf(data)  # the collector's parser: one definition of a valid message
    except InvalidPayload as exc:
        raise PoisonMessage(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    if not any(scope.spans for resource in request.resource_spans for scope in resource.scope_spans):
        raise PoisonMessage("ExportTraceServiceRequest holds no spans")
    return request


def decode_into(data: bytes, columns: SpanColumns) -> int:
    """Append the spans of one message to `columns`; returns their count or raises PoisonMessage.

    Either every span of the message is appended or none is.
    """
    request = parse_request(data)
    before = len(columns)
    try:
        for resource_spans in request.resource_spans:
            _append_resource(resource_spans, columns)
    except Exception as exc:  # a value no mapping rule covers: keep the batch whole, reject the message
        columns.truncate(before)
        raise PoisonMessage(f"cannot map spans: {type(exc).__name__}: {exc}") from None
    return len(columns) - before


def _hex_id(raw: bytes, zero: str) -> str:
    text = raw.hex()
    return "" if text == zero else text


def _append_resource(resource_spans: Any, out: SpanColumns) -> None:
    res_keys: list[str] = []
    res_values: list[str] = []
    append_attributes(resource_spans.resource.attributes, res_keys, res_values)
    service = ""
    for kv in resource_spans.resource.attributes:
        if kv.key == "service.name":
            service = kv.value.string_value
    for scope_spans in resource_spans.scope_spans:
        scope = scope_spans.scope
        _append_spans(scope_spans.spans, service, scope.name, scope.version, res_keys, res_values, out)


def _append_spans(
    spans: Any, service: str, scope_name: str, scope_version: str,
    res_keys: list[str], res_values: list[str], out: SpanColumns,
) -> None:
    # Bound methods and locals: this loop runs once per span and dominates decode time.
    ts_add, dur_add = out.timestamps.append, out.durations.append
    tid_add, sid_add, pid_add = out.trace_ids.append, out.span_ids.append, out.parent_span_ids.append
    state_add, name_add, kind_add = out.trace_states.append, out.span_names.append, out.span_kinds.append
    svc_add, scope_add, version_add = out.service_names.append, out.scope_names.append, out.scope_versions.append
    code_add, msg_add = out.status_codes.append, out.status_messages.append
    res, attrs = out.resource_attributes, out.span_attributes
    res_k_ext, res_v_ext, res_ends = res.keys.extend, res.values.extend, res.offsets.append
    attr_keys, attr_values, attr_ends = attrs.keys, attrs.values, attrs.offsets.append
    events, links = out.events, out.links
    kinds, codes = SPAN_KINDS, STATUS_CODES
    for span in spans:
        start = span.start_time_unix_nano
        end = span.end_time_unix_nano
        ts_add(start)
        dur_add(end - start if end > start else 0)
        tid = span.trace_id.hex()
        tid_add("" if tid == _ZERO_TRACE else tid)
        sid = span.span_id.hex()
        sid_add("" if sid == _ZERO_SPAN else sid)
        pid = span.parent_span_id.hex()
        pid_add("" if pid == _ZERO_SPAN else pid)
        state_add(span.trace_state)
        name_add(span.name)
        kind_add(kinds.get(span.kind, ""))
        svc_add(service)
        scope_add(scope_name)
        version_add(scope_version)
        res_k_ext(res_keys)
        res_v_ext(res_values)
        res_ends(len(res.keys))
        append_attributes(span.attributes, attr_keys, attr_values)
        attr_ends(len(attr_keys))
        status = span.status
        code_add(codes.get(status.code, ""))
        msg_add(status.message)
        if span.events:
            _append_events(span.events, events)
        events.offsets.append(len(events.names))
        if span.links:
            _append_links(span.links, links)
        links.offsets.append(len(links.trace_ids))


def _append_events(span_events: Any, events: Any) -> None:
    for event in span_events:
        events.timestamps.append(event.time_unix_nano)
        events.names.append(event.name)
        append_attributes(event.attributes, events.attributes.keys, events.attributes.values)
        events.attributes.close_row()


def _append_links(span_links: Any, links: Any) -> None:
    for link in span_links:
        links.trace_ids.append(_hex_id(link.trace_id, _ZERO_TRACE))
        links.span_ids.append(_hex_id(link.span_id, _ZERO_SPAN))
        links.trace_states.append(link.trace_state)
        append_attributes(link.attributes, links.attributes.keys, links.attributes.values)
        links.attributes.close_row()
