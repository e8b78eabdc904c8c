"""The exporter's span mapping written as ClickHouse SQL over raw OTLP protobuf (`FORMAT Protobuf`).

ClickHouse parses the `ExportTraceServiceRequest` bytes itself (C++, no per-attribute Python
objects) and `ARRAY JOIN`s them into `otel_traces` rows with the same rules as `pipelines.decode` /
`pipelines.attributes`. Values SQL cannot write exactly as pdata's `AsString` does (arrays, maps,
doubles that need an exponent, NaN/Inf) and timestamps past 2262 make the statement fail with
`UNMAPPED` before anything is stored, so the caller maps that batch in Python instead.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

from pipelines.columns import INSERT_COLUMNS

UNMAPPED = "gatewatch: batch holds values only the Python mapper writes"

# Field numbers are OTLP's (opentelemetry/proto/.../v1/*.proto); only the fields the mapping
# reads are named, the others are skipped. Nested arrays and maps stay opaque bytes: their
# presence alone sends the batch to the Python mapper.
SCHEMA = """syntax = "proto3";
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message Resource { repeated KeyValue attributes = 1; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }
message InstrumentationScope { string name = 1; string version = 2; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; string name = 5;
  int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9; repeated Event events = 11; repeated Link links = 13; Status status = 15;
}
message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; }
message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; }
message Status { string message = 2; int32 code = 3; }
message KeyValue { string key = 1; AnyValue value = 2; }
message AnyValue {
  oneof value {
    string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4;
    bytes array_value = 5; bytes kvlist_value = 6; bytes bytes_value = 7;
  }
}
"""

# The oneof's presence comes as an enum (`input_format_protobuf_oneof_presence`), so members need
# no Nullable wrappers (an int 0 is told apart from no value by the enum): the fewer and plainer the
# columns ClickHouse materialises per attribute, the cheaper the parse. Arrays and maps stay opaque
# bytes: the enum sets only for fields read, and their presence sends the batch to the Python mapper.
_KV = (
    "Array(Tuple(key String, value Tuple(value Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, "
    "'int_value' = 3, 'double_value' = 4, 'array_value' = 5, 'kvlist_value' = 6, "
    "'bytes_value' = 7), string_value String, bool_value Bool, int_value Int64, double_value Float64, "
    "array_value String, kvlist_value String, bytes_value String)))"
)
STRUCTURE = (
    f"resource_spans Array(Tuple(resource Tuple(attributes {_KV}), scope_spans Array(Tuple("
    "scope Tuple(name String, version String), spans Array(Tuple("
    "trace_id String, span_id String, trace_state String, parent_span_id String, name String, kind Int32, "
    f"start_time_unix_nano UInt64, end_time_unix_nano UInt64, attributes {_KV}, "
    f"events Array(Tuple(time_unix_nano UInt64, name String, attributes {_KV})), "
    f"links Array(Tuple(trace_id String, span_id String, trace_state String, attributes {_KV})), "
    "status Tuple(message String, code Int32)))))))"
)

_MAX_NS = 2**63 - 1  # DateTime64(9) holds signed nanoseconds; the Python mapper rejects larger ones


def _value(v: str) -> str:
    """AnyValue -> string as `attributes.as_string` (arrays/maps never reach here: see _unmapped)."""
    return (
        f"multiIf({v}.value = 'string_value', {v}.string_value, "
        f"{v}.value = 'int_value', toString({v}.int_value), "
        f"{v}.value = 'bool_value', if({v}.bool_value, 'true', 'false'), "
        f"{v}.value = 'double_value', toString({v}.double_value), "
        f"{v}.value = 'bytes_value', base64Encode({v}.bytes_value), '')"
    )


def _map(attributes: str) -> str:
    return f"mapFromArrays(arrayMap(kv -> kv.key, {attributes}), arrayMap(kv -> {_value('kv.value')}, {attributes}))"


def _unmapped_kv(attributes: str) -> str:
    # Go writes doubles without an exponent and NaN/Inf by name; ClickHouse's toString agrees only
    # inside this range (it switches to exponents below 1e-6 and from 1e21): leave the rest to Python.
    return (
        f"arrayExists(kv -> kv.value.value IN ('array_value', 'kvlist_value') "
        f"OR NOT (kv.value.double_value = 0 OR abs(kv.value.double_value) BETWEEN 1e-5 AND 1e20), {attributes})"
    )


def _hex(raw: str, zeros: int) -> str:
    return f"if(lower(hex({raw})) = '{'0' * zeros}', '', lower(hex({raw})))"


_KINDS = "['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer']"
_CODES = "['Unset', 'Ok', 'Error']"

_SELECT = {
    "Timestamp": "fromUnixTimestamp64Nano(toInt64(sp.start_time_unix_nano))",
    "TraceId": _hex("sp.trace_id", 32),
    "SpanId": _hex("sp.span_id", 16),
    "ParentSpanId": _hex("sp.parent_span_id", 16),
    "TraceState": "sp.trace_state",
    "SpanName": "sp.name",
    "SpanKind": f"if(sp.kind BETWEEN 0 AND 5, {_KINDS}[sp.kind + 1], '')",
    "ServiceName": "_service",
    "ResourceAttributes": "_resource",
    "ScopeName": "_scope_name",
    "ScopeVersion": "_scope_version",
    "SpanAttributes": _map("sp.attributes"),
    "Duration": "greatest(sp.end_time_unix_nano, sp.start_time_unix_nano) - sp.start_time_unix_nano",
    "StatusCode": f"if(sp.status.code BETWEEN 0 AND 2, {_CODES}[sp.status.code + 1], '')",
    "StatusMessage": "sp.status.message",
    "Events.Timestamp": "arrayMap(e -> fromUnixTimestamp64Nano(toInt64(e.time_unix_nano)), sp.events)",
    "Events.Name": "arrayMap(e -> e.name, sp.events)",
    "Events.Attributes": f"arrayMap(e -> {_map('e.attributes')}, sp.events)",
    "Links.TraceId": f"arrayMap(l -> {_hex('l.trace_id', 32)}, sp.links)",
    "Links.SpanId": f"arrayMap(l -> {_hex('l.span_id', 16)}, sp.links)",
    "Links.TraceState": "arrayMap(l -> l.trace_state, sp.links)",
    "Links.Attributes": f"arrayMap(l -> {_map('l.attributes')}, sp.links)",
}
assert tuple(_SELECT) == INSERT_COLUMNS, "the SQL mapping must fill every column the Native path fills"

# Resource and scope values are computed once per scope, before the spans are joined: a request
# carries one resource for hundreds of spans.
_PER_SCOPE = {
    "_service": "ifNull(arrayLast(kv -> kv.key = 'service.name', rs.resource.attributes).value.string_value, '')",
    "_resource": _map("rs.resource.attributes"),
    "_resource_unmapped": _unmapped_kv("rs.resource.attributes"),
    "_scope_name": "ss.scope.name",
    "_scope_version": "ss.scope.version",
    "_spans": "ss.spans",
}

_UNMAPPED = " OR ".join((
    f"sp.start_time_unix_nano > {_MAX_NS}", f"sp.end_time_unix_nano > {_MAX_NS}",
    f"arrayExists(e -> e.time_unix_nano > {_MAX_NS} OR {_unmapped_kv('e.attributes')}, sp.events)",
    f"arrayExists(l -> {_unmapped_kv('l.attributes')}, sp.links)",
    _unmapped_kv("sp.attributes"), "_resource_unmapped",
))


@cache
def schema_path() -> str:
    """The schema written once per process to a private file (format_schema names a file)."""
    directory = Path(tempfile.mkdtemp(prefix="gatewatch-otlp-schema-"))
    path = directory / "otlp_trace.proto"
    path.write_text(SCHEMA)
    return str(path)


def format_settings() -> dict[str, object]:
    """Query settings for reading `STRUCTURE` with the schema (the oneof's presence enum included)."""
    return {"format_schema": f"{schema_path()}:ExportTraceServiceRequest", "input_format_protobuf_oneof_presence": 1}


def file_source(path: str) -> str:
    """The `file()` table function reading `path` (length-delimited requests) as `STRUCTURE`."""
    return f"file({_literal(path)}, 'Protobuf', {_literal(STRUCTURE)})"


def _literal(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def insert_select(table: str, source: str) -> str:
    """INSERT INTO `table` SELECT the exporter's columns FROM `source` (a table function over Protobuf)."""
    columns = ", ".join(f"`{name}`" for name in INSERT_COLUMNS)
    select = ",\n    ".join(f"{expr} AS `{name}`" for name, expr in _SELECT.items())
    per_scope = ",\n        ".join(f"{expr} AS {name}" for name, expr in _PER_SCOPE.items())
    return (
        f"INSERT INTO {table} ({columns})\nSELECT\n    {select}\nFROM (\n    SELECT\n        {per_scope}\n"
        f"    FROM {source}\n    ARRAY JOIN resource_spans AS rs ARRAY JOIN rs.scope_spans AS ss\n)\n"
        f"ARRAY JOIN _spans AS sp\nWHERE throwIf({_UNMAPPED}, '{UNMAPPED}') = 0"
    )
