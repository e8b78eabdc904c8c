"""The pipeline on the embedded span log and real chDB: exporter mapping, rollups, replays, dead letters."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from gatewatch.errors import SpanLogUnavailable
from gatewatch.settings import Settings
from gatewatch.spanlog import EmbeddedLog, Message
from pipelines import queries
from pipelines.attributes import format_double
from pipelines.columns import SpanColumns
from pipelines.decode import PoisonMessage, decode_into
from pipelines.dlq import DeadLetters
from pipelines.ledger import BatchLedger
from pipelines.metrics import PipelineMetrics
from pipelines.pipeline import Pipeline
from pipelines.service import PipelineService
from pipelines.synthetic import synthetic_request
from pipelines.writer import ClickHouseWriter


def sdk_spans() -> list[ReadableSpan]:
    """Spans from the real OpenTelemetry SDK: a gateway SERVER span with a CLIENT child."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway", "deployment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("gatewatch.proxy", "1.2.3")
    with tracer.start_as_current_span("GET /api/items/{id}", kind=SpanKind.SERVER) as server:
        server.set_attributes({
            "http.request.method": "GET", "http.route": "/api/items/{id}", "http.response.status_code": 503,
            "client.address": "203.0.113.7", "enduser.id": "alice", "retry": True, "ratio": 0.25,
            "tags": ["a", "<b>"], "big": 1e21,
        })
        server.add_event("retry", {"attempt": 2})
        server.set_status(Status(StatusCode.ERROR, "upstream failed"))
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, links=[Link(server.get_span_context())]) as call:
            call.set_attribute("peer.service", "catalog")
    provider.shutdown()
    return list(exporter.get_finished_spans())


def row_dicts(client, sql: str) -> list[dict]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def count(client, settings: Settings, table: str = "otel_traces") -> int:
    return int(client.query(f"SELECT count() FROM {settings.database}.{table}").result_rows[0][0])


def test_format_double_matches_go():
    assert [format_double(v) for v in (1.0, 0.25, 1e21, 1.5e-7, float("nan"), float("-inf"))] == [
        "1", "0.25", "1000000000000000000000", "0.00000015", "NaN", "-Inf",
    ]


def test_poison_messages_are_rejected_and_leave_the_batch_whole():
    columns = SpanColumns()
    decode_into(synthetic_request(3), columns)
    for bad in (b"\xff\x00garbage", b"", encode_spans([]).SerializeToString()):
        with pytest.raises(PoisonMessage):
            decode_into(bad, columns)
    assert len(columns) == 3 and len(columns.span_attributes.offsets) == 3


def run_pipeline(settings: Settings, store, messages: list[bytes]) -> EmbeddedLog:
    log = EmbeddedLog()
    log.producer(settings.spans_topic).send([Message(m) for m in messages])
    service = PipelineService(settings.model_copy(update={"pipeline_batch_seconds": 0.2}), span_log=log,
                              store=store, metrics_port=None)
    service.start()
    try:
        total = sum(_spans(m) for m in messages if _valid(m))
        wait_for(lambda: count(store, settings) >= total)
    finally:
        service.stop()
    return log


def _valid(message: bytes) -> bool:
    try:
        decode_into(message, SpanColumns())
    except PoisonMessage:
        return False
    return True


def _spans(message: bytes) -> int:
    columns = SpanColumns()
    return decode_into(message, columns)


def test_sdk_spans_land_in_otel_traces_as_the_exporter_writes_them(settings, store):
    spans = sdk_spans()
    run_pipeline(settings, store, [encode_spans(spans).SerializeToString()])
    rows = {r["SpanKind"]: r for r in row_dicts(store, f"SELECT * FROM {settings.database}.otel_traces")}
    server_span = next(s for s in spans if s.kind == SpanKind.SERVER)
    server, client = rows["Server"], rows["Client"]
    assert server["TraceId"] == f"{server_span.context.trace_id:032x}"
    assert server["SpanId"] == f"{server_span.context.span_id:016x}" == client["ParentSpanId"]
    assert server["ParentSpanId"] == ""
    assert server["ServiceName"] == "gateway" and server["ResourceAttributes"]["deployment"] == "test"
    assert (server["ScopeName"], server["ScopeVersion"]) == ("gatewatch.proxy", "1.2.3")
    assert server_span.end_time is not None and server_span.start_time is not None
    assert server["Duration"] == server_span.end_time - server_span.start_time
    assert (server["StatusCode"], server["StatusMessage"]) == ("Error", "upstream failed")
    assert client["StatusCode"] == "Unset"
    attributes = server["SpanAttributes"]
    assert attributes["http.response.status_code"] == "503" and attributes["retry"] == "true"
    assert attributes["ratio"] == "0.25" and attributes["big"] == "1000000000000000000000"
    assert attributes["tags"] == '["a","\\u003cb\\u003e"]'
    assert server["Events.Name"] == ["retry"] and server["Events.Attributes"] == [{"attempt": "2"}]
    assert client["Links.TraceId"] == [server["TraceId"]] and client["Links.SpanId"] == [server["SpanId"]]
    # the exporter's trace-id lookup table is fed by its materialized view
    assert count(store, settings, "otel_traces_trace_id_ts") == 1


def test_rollups_agree_with_raw_spans(settings, store):
    messages = [synthetic_request(200, seed) for seed in range(5)]
    messages.append(encode_spans(sdk_spans()).SerializeToString())
    run_pipeline(settings, store, messages)
    db = settings.database
    raw = store.query(
        "SELECT count(), countIf(StatusCode = 'Error' OR "
        "toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500) "
        f"FROM {db}.otel_traces WHERE SpanKind = 'Server'"
    ).result_rows[0]
    rolled = store.query(f"SELECT sum(Requests), sum(Errors) FROM {db}.traffic_1m").result_rows[0]
    assert rolled == raw
    now = time.time()
    routes = queries.traffic_by_route(store, db, now - 3600, now + 60, service="gateway")
    assert sum(r.requests for r in routes) == raw[0] and all(r.p99_ms >= r.p50_ms > 0 for r in routes)
    by_client = store.query(
        "SELECT if(SpanAttributes['enduser.id'] != '', SpanAttributes['enduser.id'], "
        f"SpanAttributes['client.address']) AS k, count() FROM {db}.otel_traces WHERE SpanKind = 'Server' GROUP BY k"
    ).result_rows
    activity = queries.client_activity(store, db, now - 3600, now + 60)
    assert {(a.key, a.requests) for a in activity} == {(k, n) for k, n in by_client}
    assert [(e.caller, e.callee, e.calls, e.errors) for e in queries.edges(store, db, now - 3600, now + 60)] == [
        ("gateway", "catalog", 1, 0)
    ]
    per_minute = queries.traffic_per_minute(store, db, now - 3600, now + 60)
    assert sum(m.requests for m in per_minute) == raw[0]


class Crash(Exception):
    """Stands in for a process dying between the insert and the offset commit."""


def make_pipeline(settings: Settings, store, log: EmbeddedLog, batch_rows: int, crash: bool) -> Pipeline:
    def after_insert() -> None:
        if crash:
            raise Crash

    return Pipeline(
        log.consumer(settings.spans_topic, settings.pipeline_group),
        ClickHouseWriter(store, settings.database),
        BatchLedger(store, settings.database),
        DeadLetters(log.producer(settings.dlq_topic)),
        PipelineMetrics(),
        batch_rows=batch_rows,
        batch_seconds=0.05,
        after_insert=after_insert,
    )


def test_replay_after_a_crash_between_insert_and_commit_stores_each_span_once(settings, store):
    log = EmbeddedLog()
    log.producer(settings.spans_topic).send([Message(synthetic_request(100, seed)) for seed in range(6)])
    first = make_pipeline(settings, store, log, batch_rows=250, crash=True)
    with pytest.raises(Crash):
        for _ in range(50):
            first.step(0.05)
    inserted = count(store, settings)
    assert 0 < inserted < 600
    # The restarted pipeline batches differently (bigger batches), yet must rebuild the recorded range.
    second = make_pipeline(settings, store, log, batch_rows=10_000, crash=False)
    deadline = time.monotonic() + 60
    while count(store, settings) < 600 and time.monotonic() < deadline:
        second.step(0.05)
    second.flush()
    assert count(store, settings) == 600
    db = settings.database
    assert store.query(f"SELECT sum(Requests) FROM {db}.traffic_1m").result_rows[0][0] == 600
    assert store.query(f"SELECT uniqExact(SpanId), count() FROM {db}.otel_traces").result_rows[0] == (600, 600)
    assert count(store, settings, "otel_traces_trace_id_ts") == 600


def test_the_same_batch_written_twice_is_stored_and_rolled_up_once(settings, store):
    columns = SpanColumns()
    decode_into(synthetic_request(50), columns)
    writer = ClickHouseWriter(store, settings.database)
    writer.write(columns, "t/0/0-9")
    writer.write(columns, "t/0/0-9")
    assert count(store, settings) == 50
    assert store.query(f"SELECT sum(Requests) FROM {settings.database}.traffic_1m").result_rows[0][0] == 50
    writer.write(columns, "t/0/10-19")  # a different range is new data
    assert count(store, settings) == 100


def test_dead_letters_carry_error_and_source_offset_and_good_messages_are_stored(settings, store):
    good = [synthetic_request(10, seed) for seed in range(3)]
    empty = encode_spans([]).SerializeToString()
    log = run_pipeline(settings, store, [good[0], b"\x0a\xff\xff garbage", empty, good[1], good[2]])
    assert count(store, settings) == 30
    dlq = log.consumer(settings.dlq_topic, "check").poll(10, 1.0)
    assert [m.value for m in dlq] == [b"\x0a\xff\xff garbage", empty]
    headers = [dict(m.headers) for m in dlq]
    assert [h["source.offset"] for h in headers] == [b"1", b"2"]
    assert headers[0]["source.topic"] == settings.spans_topic.encode()
    assert b"not an OTLP" in headers[0]["error"] and b"no spans" in headers[1]["error"]


def test_store_errors_are_retried_without_committing(settings, store):
    log = EmbeddedLog()
    log.producer(settings.spans_topic).send([Message(synthetic_request(20))])
    pipeline = make_pipeline(settings, store, log, batch_rows=1, crash=False)
    failures: list[str]  # the tokens of the failed writes
    real_write, failures = pipeline._writer.write, []

    def flaky_write(columns, token):
        if len(failures) < 2:
            failures.append(token)
            raise ConnectionError("store down")
        real_write(columns, token)

    pipeline._writer.write = flaky_write  # type: ignore[method-assign]
    pipeline.backoff.initial_s = 0.01
    pipeline.step(0.5)
    assert len(failures) == 2 and failures[0] == failures[1]  # the retry reuses the token
    assert count(store, settings) == 20
    assert pipeline.metrics.store_errors._value.get() == 2


def test_span_log_outages_are_waited_out_not_fatal(settings, store):
    log = EmbeddedLog()
    log.producer(settings.spans_topic).send([Message(synthetic_request(20))])
    pipeline = make_pipeline(settings, store, log, batch_rows=1, crash=False)
    real_poll, outages = pipeline._consumer.poll, [SpanLogUnavailable("broker restarting")] * 2

    def flaky_poll(max_messages: int = 10_000, timeout_s: float = 1.0) -> list[Message]:  # LogConsumer.poll's
        if outages:
            raise outages.pop()
        return real_poll(max_messages, timeout_s)

    pipeline._consumer.poll = flaky_poll  # type: ignore[method-assign]
    assert [pipeline.step(0.01) for _ in range(3)] == [0, 0, 1]
    assert count(store, settings) == 20
    assert pipeline.metrics.poll_errors._value.get() == 2
