"""A request through the gateway becomes a span in otel_traces: collector + pipeline on real Kafka."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from collector.service import CollectorService
from gatewatch.settings import Settings
from pipelines.service import PipelineService
from proxy.gateway import GatewayService
from tests.test_gateway import Keys, gateway_yaml, upstreams  # noqa: F401 - fixture

pytestmark = pytest.mark.kafka


def test_gateway_request_lands_in_otel_traces(
    kafka_settings: Settings, store: object, tmp_path: Path, upstreams: list[int],  # noqa: F811
) -> None:
    settings = kafka_settings.model_copy(update={
        "collector_http_port": 0, "collector_grpc_port": 0, "pipeline_group": f"gw-{kafka_settings.database}",
    })
    collector = CollectorService(settings)
    collector.start()
    pipeline = PipelineService(settings.model_copy(update={"pipeline_batch_seconds": 0.2}), metrics_port=None)
    pipeline.start()
    keys = Keys()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    decisions = tmp_path / "decisions.json"
    decisions.write_text("[]")
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway_yaml(upstreams, jwks, decisions).replace("enabled: false", "enabled: true"))
    gateway = GatewayService(config, settings.model_copy(update={"otlp_endpoint": collector.http_endpoint}))
    gateway.start()
    try:
        token = keys.token("rs", sub="user-42")
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = httpx.get(
            f"http://127.0.0.1:{gateway.port}/secure/items?q=1",
            headers={"authorization": f"Bearer {token}", "user-agent": "gw-test/1.0", "traceparent": parent},
        )
        assert response.status_code == 200
        forwarded = response.json()["headers"]["traceparent"]
        assert forwarded.startswith("00-0af7651916cd43dd8448eb211c80319c-")  # same trace, our span as parent
        exported = 'gatewatch_proxy_spans_total{outcome="exported"} 1.0'
        deadline = time.monotonic() + 30  # the partial batch goes out after the export delay
        while exported not in (metrics := httpx.get(f"http://127.0.0.1:{gateway.admin_port}/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.1)
        assert 'gatewatch_proxy_spans_total{outcome="dropped"} 0.0' in metrics
    finally:
        gateway.stop(5)  # flushes the span exporter
    query = (
        f"SELECT SpanName, SpanKind, ServiceName, SpanAttributes FROM {settings.database}.otel_traces "
        "WHERE TraceId = '0af7651916cd43dd8448eb211c80319c'"
    )
    try:
        deadline = time.monotonic() + 60
        rows: list = []
        while time.monotonic() < deadline and not rows:
            rows = store.query(query).result_rows  # type: ignore[attr-defined]
            time.sleep(0.3)
    finally:
        pipeline.stop(10)
        collector.stop(5)
    assert rows, "the gateway's span never reached otel_traces"
    name, kind, service, attributes = rows[0]
    assert name == "GET /secure/*"
    assert kind in ("Server", "SPAN_KIND_SERVER")
    assert service == "gateway"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/secure/*"
    assert attributes["url.path"] == "/secure/items"
    assert attributes["http.response.status_code"] == "200"
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["user_agent.original"] == "gw-test/1.0"
    assert attributes["enduser.id"] == "user-42"
    assert attributes["gatewatch.ratelimit.outcome"] == "unlimited"
    assert attributes["gatewatch.auth.outcome"] == "ok"
