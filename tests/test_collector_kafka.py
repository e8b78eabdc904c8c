"""Official OpenTelemetry OTLP exporters -> collector -> real Kafka topic otlp_spans."""

from __future__ import annotations

from collections import defaultdict

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.types import AttributeValue

from collector.service import CollectorService
from gatewatch.settings import Settings
from gatewatch.spanlog import KafkaLog
from tests.collector_helpers import read_messages, spans_of
from tests.conftest import unique

TRACES, CHILDREN = 25, 3


def exporter_for(kind: str, service: CollectorService) -> SpanExporter:
    """The official exporter with default settings; only the endpoint (ephemeral port) is given."""
    if kind.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        compression = Compression.Gzip if kind.endswith("gzip") else None
        return HttpExporter(endpoint=f"{service.http_endpoint}/v1/traces", compression=compression)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter(endpoint=f"http://{service.grpc_endpoint}")  # http:// = plaintext, the default otherwise


def emit_traces(exporter: SpanExporter) -> dict[int, int]:
    """Emit TRACES traces of 1 + CHILDREN spans through a batch processor; span id -> trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway", "deployment.environment": "test"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("gatewatch.test", "1.0")
    sent: dict[int, int] = {}
    for t in range(TRACES):
        attributes: dict[str, AttributeValue] = {
            "http.request.method": "GET", "http.route": "/api/items/{id}", "url.path": f"/api/items/{t}",
            "http.response.status_code": 200, "client.address": "203.0.113.7", "user_agent.original": "t",
            "server.address": "gw", "enduser.id": f"user-{t}", "gatewatch.ratelimit.outcome": "allowed",
            "net.peer.port": 443,
        }
        with tracer.start_as_current_span("GET /api/items/{id}", attributes=attributes) as root:
            sent[root.get_span_context().span_id] = root.get_span_context().trace_id
            for c in range(CHILDREN):
                with tracer.start_as_current_span(f"upstream {c}", attributes={"peer.service": f"svc-{c}"}) as child:
                    sent[child.get_span_context().span_id] = child.get_span_context().trace_id
    assert provider.force_flush(30_000)
    provider.shutdown()
    return sent


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["http", "http-gzip", "grpc"])
def test_official_exporters_deliver_every_span_to_otlp_spans(kafka_settings: Settings, kind: str):
    service = CollectorService(kafka_settings.model_copy(update={"collector_http_port": 0, "collector_grpc_port": 0}))
    service.start()
    try:
        sent = emit_traces(exporter_for(kind, service))
    finally:
        service.stop(10.0)
    assert len(sent) == TRACES * (1 + CHILDREN)

    messages = read_messages(KafkaLog(kafka_settings.kafka), kafka_settings.spans_topic, unique("g"), len(sent))
    got: dict[int, int] = {}
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for message in messages:
        request = ExportTraceServiceRequest.FromString(message.value)
        assert request.SerializeToString() == message.value  # byte-for-byte canonical otlp_proto
        for rs in request.resource_spans:
            assert {"service.name", "deployment.environment"} <= {a.key for a in rs.resource.attributes}
            assert [ss.scope.name for ss in rs.scope_spans] == ["gatewatch.test"]
        spans = spans_of(request)
        assert {s.trace_id.hex().encode() for s in spans} == {message.key}  # key = the trace id in hex
        assert message.key is not None
        assert all(len(s.attributes) >= 1 for s in spans)
        partitions[message.key].add(message.partition)
        got.update({int.from_bytes(s.span_id, "big"): int.from_bytes(s.trace_id, "big") for s in spans})
    assert got == sent
    assert len(partitions) == TRACES and all(len(p) == 1 for p in partitions.values())
