"""The pipeline through the real Kafka broker: full OTLP chain, a real process kill, dead letters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from gatewatch.settings import Settings
from gatewatch.spanlog import KafkaLog, Message
from gatewatch.topics import ensure_topics, topic_specs
from pipelines.service import CRASH_ENV, PipelineService
from pipelines.synthetic import synthetic_request
from tests.test_pipeline_store import count, wait_for

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]


def own_group(settings: Settings) -> Settings:
    """A consumer group of this test's own, so other tests' members never rebalance it."""
    group = f"pipeline-{settings.database}"
    return settings.model_copy(update={"pipeline_group": group, "pipeline_batch_seconds": 0.2})


def emit_through_collector(settings: Settings, traces: int) -> int:
    """Real OTLP/HTTP exporter -> CollectorService; returns the spans emitted."""
    from collector.service import CollectorService

    collector = CollectorService(settings.model_copy(update={"collector_http_port": 0, "collector_grpc_port": 0}))
    collector.start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.http_endpoint}/v1/traces"))
        )
        tracer = provider.get_tracer("gatewatch.test")
        for i in range(traces):
            with tracer.start_as_current_span("GET /api/items/{id}", kind=SpanKind.SERVER) as span:
                span.set_attributes({
                    "http.request.method": "GET", "http.route": "/api/items/{id}",
                    "http.response.status_code": 500 if i % 10 == 0 else 200, "client.address": f"10.0.0.{i % 7}",
                })
                with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as call:
                    call.set_attribute("peer.service", "catalog")
        provider.shutdown()
    finally:
        collector.stop()
    return traces * 2


def test_otlp_exporter_collector_kafka_pipeline_otel_traces(kafka_settings: Settings, store):
    settings = own_group(kafka_settings)
    service = PipelineService(settings, store=store, metrics_port=0)
    service.start()
    try:
        spans = emit_through_collector(settings, traces=60)
        wait_for(lambda: count(store, settings) >= spans)
        db = settings.database
        assert count(store, settings) == spans
        kinds = dict(store.query(f"SELECT SpanKind, count() FROM {db}.otel_traces GROUP BY SpanKind").result_rows)
        assert kinds == {"Server": 60, "Client": 60}
        joined = store.query(
            f"SELECT count() FROM {db}.otel_traces c JOIN {db}.otel_traces s "
            "ON c.ParentSpanId = s.SpanId AND c.TraceId = s.TraceId WHERE c.SpanKind = 'Client'"
        ).result_rows[0][0]
        assert joined == 60
        assert store.query(f"SELECT sum(Requests), sum(Errors) FROM {db}.traffic_1m").result_rows[0] == (60, 6)
        assert store.query(f"SELECT Caller, Callee, sum(Calls) FROM {db}.edges_1m GROUP BY ALL").result_rows == [
            ("gateway", "catalog", 60)
        ]
        metrics = _scrape(service.metrics_port)
        assert "gatewatch_pipeline_rows_written_total 120.0" in metrics
        assert "gatewatch_pipeline_consumer_lag" in metrics and "gatewatch_pipeline_batch_seconds_count" in metrics
    finally:
        service.stop()


def _scrape(port: int | None) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_poison_messages_go_to_the_dlq_and_good_ones_are_stored(kafka_settings: Settings, store):
    settings = own_group(kafka_settings)
    ensure_topics(settings.kafka, topic_specs(settings))
    producer = KafkaLog(settings.kafka).producer(settings.spans_topic)
    empty = encode_spans([]).SerializeToString()
    producer.send([Message(b"\x00garbage\xff", key=b"k"), Message(empty, key=b"k")])
    producer.send([Message(synthetic_request(25, seed), key=b"k") for seed in range(4)])
    producer.close()
    service = PipelineService(settings, store=store, metrics_port=None)
    service.start()
    try:
        wait_for(lambda: count(store, settings) >= 100)
    finally:
        service.stop()
    assert count(store, settings) == 100
    consumer = KafkaConsumer(settings.dlq_topic, bootstrap_servers=settings.kafka, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    dead = [next(consumer), next(consumer)]
    consumer.close()
    assert [d.value for d in dead] == [b"\x00garbage\xff", empty]
    headers = [dict(d.headers) for d in dead]
    assert headers[0]["source.topic"] == settings.spans_topic.encode()
    assert int(headers[1]["source.offset"]) == int(headers[0]["source.offset"]) + 1
    assert b"not an OTLP" in headers[0]["error"] and b"no spans" in headers[1]["error"]


def _pipeline_process(settings: Settings, store_dsn: str, crash: bool) -> subprocess.Popen:
    env = {
        **os.environ, "GATEWATCH_KAFKA": settings.kafka, "GATEWATCH_CLICKHOUSE": store_dsn,
        "GATEWATCH_DATABASE": settings.database, "GATEWATCH_SPANS_TOPIC": settings.spans_topic,
        "GATEWATCH_DLQ_TOPIC": settings.dlq_topic, "GATEWATCH_DECISIONS_TOPIC": settings.decisions_topic,
        "GATEWATCH_PIPELINE_GROUP": settings.pipeline_group,
    }
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "gatewatch", "pipeline", "--batch-rows", "250", "--batch-seconds", "0.5",
         "--metrics-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _committed(settings: Settings) -> int:
    """Messages of the spans topic the pipeline group has committed (sum over partitions)."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka, group_id=settings.pipeline_group,
                             enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(settings.spans_topic) or set()
        return sum(consumer.committed(TopicPartition(settings.spans_topic, p)) or 0 for p in partitions)
    finally:
        consumer.close(autocommit=False)


def _query(store_dsn: str, sql: str) -> list:
    code = (
        "import json, sys; from gatewatch.store import connect; "
        "print(json.dumps(connect(sys.argv[1]).query(sys.argv[2]).result_rows))"
    )
    out = subprocess.run([sys.executable, "-c", code, store_dsn, sql], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


def test_killed_between_insert_and_commit_then_restarted_stores_every_span_once(kafka_settings, tmp_path):
    settings = own_group(kafka_settings)
    store_dsn = f"chdb://{tmp_path / 'store'}"  # the pipeline processes' own store (one chDB per process)
    ensure_topics(settings.kafka, topic_specs(settings))
    producer = KafkaLog(settings.kafka).producer(settings.spans_topic)
    producer.send([Message(synthetic_request(100, seed), key=bytes([seed])) for seed in range(12)])
    producer.close()
    crashing = _pipeline_process(settings, store_dsn, crash=True)
    assert crashing.wait(timeout=180) == 75, crashing.stderr.read().decode()[-2000:] if crashing.stderr else ""
    assert _committed(settings) < 12  # it died after inserting, before committing
    inserted = _query(store_dsn, f"SELECT count() FROM {settings.database}.otel_traces")[0][0]
    assert inserted > 0
    restarted = _pipeline_process(settings, store_dsn, crash=False)
    try:
        wait_for(lambda: _committed(settings) == 12, timeout_s=180)
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=60) == 0
    db = settings.database
    assert _query(store_dsn, f"SELECT count(), uniqExact(SpanId) FROM {db}.otel_traces") == [[1200, 1200]]
    assert _query(store_dsn, f"SELECT sum(Requests) FROM {db}.traffic_1m") == [[1200]]
