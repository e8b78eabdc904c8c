"""ClickHouse maps raw OTLP protobuf (pipelines.sqlmap) exactly as the Python mapper does, or declines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gatewatch.settings import Settings
from gatewatch.spanlog import EmbeddedLog, Message
from pipelines.dlq import DeadLetters
from pipelines.ledger import BatchLedger
from pipelines.metrics import PipelineMetrics
from pipelines.migrate import migrate
from pipelines.pipeline import Pipeline
from pipelines.rawspans import RawSpans
from pipelines.synthetic import synthetic_request
from pipelines.writer import ClickHouseWriter

TABLES = ("otel_traces", "otel_traces_trace_id_ts", "traffic_1m", "edges_1m")


def rich_request(double: float = 0.1, array: bool = False, start: int = 5) -> bytes:
    """One request exercising every mapping rule: value types, zero ids, unknown enums, events, links."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    for key, value in (("service.name", "svc"), ("host.name", "h")):
        kv = resource.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    resource.resource.attributes.add().key = "unset"
    scope = resource.scope_spans.add()
    scope.scope.name, scope.scope.version = "lib", "9"
    span = scope.spans.add()
    span.trace_id, span.span_id, span.kind, span.name = bytes(16), b"\x01" * 8, 9, "odd"
    span.start_time_unix_nano, span.end_time_unix_nano = start, 3
    span.status.code, span.status.message = 2, "boom"
    values = {"t": True, "f": False, "zero": 0, "neg": -42, "d": double, "d3": 3.0, "nz": -0.0, "small": 2.5e-3,
              "s": "héllo <&>", "empty": ""}
    for key, scalar in values.items():
        kv = span.attributes.add()
        kv.key = key
        field = {bool: "bool_value", int: "int_value", float: "double_value", str: "string_value"}[type(scalar)]
        setattr(kv.value, field, scalar)
    kv = span.attributes.add()
    kv.key, kv.value.bytes_value = "raw", b"\x00\xffhi"
    if array:
        kv = span.attributes.add()
        kv.key = "tags"
        kv.value.array_value.values.add().string_value = "<a>"
    event = span.events.add()
    event.time_unix_nano, event.name = 7, "retry"
    kv = event.attributes.add()
    kv.key, kv.value.int_value = "attempt", 2
    span.events.add().name = "bare"
    link = span.links.add()
    link.trace_id, link.span_id, link.trace_state = b"\x02" * 16, bytes(8), "k=v"
    scope.spans.add().name = "plain"
    client = scope.spans.add()
    client.kind, client.name, client.trace_id = 3, "call", b"\x03" * 16
    kv = client.attributes.add()
    kv.key, kv.value.string_value = "peer.service", "catalog"
    return request.SerializeToString()


@pytest.fixture
def python_db(settings: Settings, store) -> Iterator[Settings]:
    """A second database of this test's own, written by the Python mapper for comparison."""
    other = settings.model_copy(update={"database": f"{settings.database}_py"})
    migrate(store, other)
    yield other
    store.command(f"DROP DATABASE IF EXISTS {other.database}")


def raw(*payloads: bytes) -> RawSpans:
    spans = RawSpans()
    for offset, payload in enumerate(payloads):
        spans.add(Message(payload, offset=offset))
    return spans


def dump(store, database: str, table: str) -> str:
    columns = "* EXCEPT Latency" if table in ("traffic_1m", "edges_1m") else "*"
    return store.raw_query(f"SELECT {columns} FROM {database}.{table} ORDER BY ALL FORMAT TSV").decode()


def sql_mapped(store, settings: Settings, spans: RawSpans, token: str) -> bool:
    """Write through the SQL path; True if ClickHouse mapped the batch itself."""
    writer = ClickHouseWriter(store, settings.database)
    assert writer.maps_protobuf
    return writer._write_protobuf(spans.payloads(), token)


def test_sql_mapping_stores_what_the_python_mapper_stores(settings, store, python_db):
    payloads = [rich_request(), *(synthetic_request(40, seed) for seed in range(3))]
    assert sql_mapped(store, settings, raw(*payloads), "t/0/0-3")
    ClickHouseWriter(store, python_db.database).write(raw(*payloads).columns(), "t/0/0-3")
    for table in TABLES:
        assert dump(store, settings.database, table) == dump(store, python_db.database, table), table
    assert dump(store, settings.database, "otel_traces").count("\n") == 123


def test_sql_inserts_are_deduplicated_by_token(settings, store):
    spans = raw(synthetic_request(30))
    writer = ClickHouseWriter(store, settings.database)
    for token in ("t/0/0-0", "t/0/0-0", "t/0/1-1"):
        writer.write(spans, token)
    db = settings.database
    assert store.command(f"SELECT count() FROM {db}.otel_traces") == 60
    assert store.command(f"SELECT sum(Requests) FROM {db}.traffic_1m") == 60


@pytest.mark.parametrize("case", ["array", "nan", "exponent", "tiny"])
def test_values_sql_cannot_write_exactly_leave_the_batch_to_python(settings, store, python_db, case):
    double = {"nan": float("nan"), "exponent": 1e21, "tiny": 1.5e-7}.get(case, 0.5)
    payloads = [synthetic_request(5), rich_request(double=double, array=case == "array")]
    assert not sql_mapped(store, settings, raw(*payloads), "t/0/0-1")
    assert dump(store, settings.database, "otel_traces") == ""  # declined before storing anything
    ClickHouseWriter(store, settings.database).write(raw(*payloads), "t/0/0-1")
    ClickHouseWriter(store, python_db.database).write(raw(*payloads).columns(), "t/0/0-1")
    assert dump(store, settings.database, "otel_traces") == dump(store, python_db.database, "otel_traces")


def test_unmappable_message_found_at_insert_goes_to_the_dlq_and_the_rest_is_stored(settings, store):
    log = EmbeddedLog()
    too_late = rich_request(start=2**63)  # parses, but no DateTime64(9) holds it
    log.producer(settings.spans_topic).send([Message(synthetic_request(10)), Message(too_late)])
    metrics = PipelineMetrics()
    pipeline = Pipeline(
        log.consumer(settings.spans_topic, settings.pipeline_group), ClickHouseWriter(store, settings.database),
        BatchLedger(store, settings.database), DeadLetters(log.producer(settings.dlq_topic)), metrics,
    )
    while pipeline.step(0.05):
        pass
    pipeline.flush()
    assert store.command(f"SELECT count() FROM {settings.database}.otel_traces") == 10
    assert metrics.rows_written._value.get() == 10
    dead = log.consumer(settings.dlq_topic, "check").poll(10, 1.0)
    assert [m.value for m in dead] == [too_late]
    assert b"cannot map spans" in dict(dead[0].headers)["error"]
