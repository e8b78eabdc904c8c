"""Backpressure against a real broker that goes away: 503/UNAVAILABLE, never a success that is
later dropped; once the broker is back, the official exporters' own retries deliver everything."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.service import CollectorService
from gatewatch import devkafka
from gatewatch.settings import Settings
from gatewatch.spanlog import KafkaLog
from tests.collector_helpers import make_request, read_messages, spans_of
from tests.conftest import unique
from tests.test_collector_receivers import PROTOBUF, grpc_export

RETRY_AFTER_S = 12  # the exporters make 6 attempts: 5 waits of 12 s outlast a broker restart on a busy machine


def finished_spans(count: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("gatewatch.test")
    for i in range(count):
        with tracer.start_as_current_span(f"span {i}"):
            pass
    return list(memory.get_finished_spans())


def export_in_background(exporter: SpanExporter, spans: list[ReadableSpan], results: list[SpanExportResult]):
    thread = threading.Thread(target=lambda: results.append(exporter.export(spans)), daemon=True)
    thread.start()
    return thread


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_outage_gets_503_and_retries_deliver_everything(settings: Settings, tmp_path: Path):
    state = tmp_path / "kafka"
    broker = devkafka.start(state)
    service: CollectorService | None = None
    try:
        settings = settings.model_copy(update={"kafka": broker.bootstrap, "collector_http_port": 0,
                                               "collector_grpc_port": 0, "collector_retry_after_s": RETRY_AFTER_S})
        service = CollectorService(settings)
        service.start()
        url = f"{service.http_endpoint}/v1/traces"
        before = make_request(spans=6, per_trace=2)
        assert httpx.post(url, content=before.SerializeToString(), headers=PROTOBUF).status_code == 200

        devkafka.stop(state, keep_data=True)
        refused = httpx.post(url, content=make_request().SerializeToString(), headers=PROTOBUF, timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"] == str(RETRY_AFTER_S)
        _, error = grpc_export(service, make_request().SerializeToString())
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
        assert httpx.get(f"{service.http_endpoint}/readyz").status_code == 503

        # Official exporters, default settings but a timeout long enough to span the restart.
        http_spans, grpc_spans = finished_spans(20), finished_spans(20)
        results: list[SpanExportResult] = []
        threads = [
            export_in_background(HttpExporter(endpoint=url, timeout=150), http_spans, results),
            export_in_background(GrpcExporter(endpoint=f"http://{service.grpc_endpoint}", timeout=150),
                                 grpc_spans, results),
        ]
        time.sleep(1.0)  # both are now backing off after a 503 / UNAVAILABLE
        devkafka.start(state, keep_data=True)
        for thread in threads:
            thread.join(200)
        assert results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
        assert httpx.get(f"{service.http_endpoint}/readyz").status_code == 200
    finally:
        if service is not None:
            service.stop(10.0)

    try:
        want = {s.span_id for s in spans_of(before)} | {
            s.context.span_id.to_bytes(8, "big") for s in http_spans + grpc_spans}
        messages = read_messages(KafkaLog(broker.bootstrap), settings.spans_topic, unique("g"), len(want))
        got = {s.span_id for m in messages for s in spans_of(ExportTraceServiceRequest.FromString(m.value))}
        assert want <= got  # everything acknowledged is there (a refused batch may appear twice: at-least-once)
    finally:
        devkafka.stop(state)
