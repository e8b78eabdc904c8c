"""Detectors on traffic stored through the real pipeline; decisions, alerts and the control plane."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from detectors import simulate
from detectors.alerting import Alerter, AlertmanagerReceiver, StoreReceiver, WebhookReceiver
from detectors.config import DetectorConfig
from detectors.controlplane import ControlPlaneService
from detectors.cycle import DetectionCycle
from detectors.service import DetectorService
from detectors.sinks import DecisionPublisher
from gatewatch.decisions import Decision, DecisionKind
from gatewatch.spanlog import Message, open_span_log
from pipelines.service import PipelineService


class Receiver:
    """A local Alertmanager-compatible (and webhook) test receiver recording every POST body."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []  # (path, JSON body)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alertmanager(self) -> list[dict]:
        return [a for path, body in self.posts if path == "/api/v2/alerts" for a in body]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def through_pipeline(settings, store, scenario, span_log) -> None:
    """Send the scenario as OTLP to the spans topic and let the real pipeline store it."""
    producer = span_log.producer(settings.spans_topic)
    expected = 0
    for request in simulate.otlp_requests(scenario):
        producer.send([Message(request.SerializeToString(), key=None)])
        expected += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    pipeline = PipelineService(settings, span_log=span_log, store=store, metrics_port=None)
    pipeline.start()
    try:
        deadline = time.monotonic() + 120
        count = 0
        while time.monotonic() < deadline:
            count = store.query(f"SELECT count() FROM {settings.database}.otel_traces").result_rows[0][0]
            if count >= expected:
                break
            time.sleep(0.3)
        assert count == expected
    finally:
        pipeline.stop()


def test_bot_and_failing_edge_through_the_pipeline(settings, store, receiver):
    start = time.time() - 600
    scenario = simulate.scenario(seed=11, start=start, duration_s=420, humans=20, bots=("scraper", "stuffer"),
                                 bot_after_s=200, fault_after_s=330)
    span_log = open_span_log(settings)
    through_pipeline(settings, store, scenario, span_log)
    publish = DecisionPublisher(settings, span_log, store)
    alerter = Alerter([StoreReceiver(store, settings.database), AlertmanagerReceiver(receiver.url),
                       WebhookReceiver(receiver.url + "/hook")])
    cycle = DetectionCycle(store, settings.database, DetectorConfig(decision_ttl_s=30), publish, alerter)
    decisions: list[Decision] = []
    for offset in range(130, 601, 10):
        decisions += cycle.run(datetime.fromtimestamp(start + offset, UTC)).decisions
    by_target: dict[str, list[Decision]] = {}
    for d in decisions:
        by_target.setdefault(d.target.key, []).append(d)
    bots = {t.key: t for t in scenario.truth if t.kind == "bot"}
    for key, truth in bots.items():
        first = by_target[key][0]
        assert first.kind == DecisionKind.RATE_LIMIT and first.reason.detector == "bot"
        assert first.reason.score >= 0.8 and len(first.reason.top_features) == 3
        assert 0 < first.created_at.timestamp() - truth.start <= 30
    humans = {r.client for r in scenario.requests} - set(bots)
    assert not humans & set(by_target)
    edge = by_target["checkout->payment"]
    assert edge[0].kind == DecisionKind.CIRCUIT_OPEN and edge[0].params["cause"] == "errors"
    assert 0 < edge[0].created_at.timestamp() - (start + 330) <= 30
    assert edge[-1].kind == DecisionKind.CIRCUIT_CLOSE  # traffic ended at +420: released
    assert "frontend->checkout" not in by_target and "checkout->inventory" not in by_target
    # Every decision expires; after the traffic stops nothing is renewed, so all are gone by now.
    later = datetime.fromtimestamp(start + 600 + 30, UTC)
    assert all(not d.is_active(later) for d in decisions if d.kind != DecisionKind.ROUTE_LIMIT)
    limits = [d for d in decisions if d.kind == DecisionKind.ROUTE_LIMIT]
    assert limits and all(d.mode == "dry_run" and d.params["rate_per_s"] >= 1.0 for d in limits)
    assert cycle.keepers["bot"].active == {} and cycle.keepers["spike"].active == {}
    # Stored in the table and on the topic, keyed by target.
    stored = store.query(f"SELECT count() FROM {settings.database}.decisions").result_rows[0][0]
    assert stored == len(decisions)
    consumer = span_log.consumer(settings.decisions_topic, "test-reader")
    messages = consumer.poll(timeout_s=1.0)
    assert len(messages) == len(decisions) and messages[0].key == decisions[0].target.ref().encode()
    # Alerts reached the Alertmanager-compatible receiver, and resolved.
    sent = receiver.alertmanager()
    names = {a["labels"]["alertname"] for a in sent}
    assert names == {"GatewatchBotDetected", "GatewatchEdgeFailureSpike"}
    resolved = {a["labels"]["target"] for a in sent if "endsAt" in a}
    assert resolved == set(bots) | {"checkout->payment"}
    hooks = [body for path, body in receiver.posts if path == "/hook"]
    assert sorted(h["status"] for h in hooks) == ["firing"] * 3 + ["resolved"] * 3  # deduplicated
    rows = store.query(f"SELECT Fingerprint, EndsAt FROM {settings.database}.alerts FINAL").result_rows
    assert len(rows) == 3 and all(r[1] is not None for r in rows)


def test_alerter_retries_a_receiver_that_was_down(receiver):
    from gatewatch.alerts import Alert

    down = AlertmanagerReceiver("http://127.0.0.1:9")  # nothing listens there
    alerter = Alerter([down])
    now = datetime.now(UTC)
    alerter.sync([Alert(fingerprint="x", name="X")], now)
    down.url = receiver.url + "/api/v2/alerts"
    alerter.sync([Alert(fingerprint="x", name="X")], now + timedelta(seconds=1))
    assert [a["labels"]["alertname"] for a in receiver.alertmanager()] == ["X"]


@pytest.mark.kafka
def test_live_loop_enforces_at_the_control_plane(kafka_settings, store, receiver):
    settings = kafka_settings.model_copy(update={"control_plane_port": 0, "control_token": SecretStr("s3cret")})
    now = time.time()
    scenario = simulate.scenario(seed=12, start=now - 200, duration_s=200, humans=20, bots=("hammer",),
                                 bot_after_s=170)
    span_log = open_span_log(settings)
    from gatewatch.topics import ensure_topics, topic_specs

    ensure_topics(settings.kafka, topic_specs(settings))
    through_pipeline(settings, store, scenario, span_log)
    config = DetectorConfig(interval_s=1.0, alertmanager_url=receiver.url, model_dir=settings.data_dir / "m")
    plane = ControlPlaneService(settings, store=store, span_log=span_log)
    detectors = DetectorService(settings, store=store, span_log=span_log, config=config)
    plane.start()
    detectors.start()
    try:
        assert httpx.get(plane.url + "/v1/decisions").status_code == 401
        assert httpx.get(plane.url + "/v1/decisions", headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.get(plane.url + "/v1/decisions/watch?since=x", headers=auth).status_code == 400
        version, found = 0, None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            snap = httpx.get(plane.url + f"/v1/decisions/watch?since={version}&timeout=5", headers=auth,
                             timeout=15).json()
            version = snap["version"]
            found = next((d for d in snap["decisions"] if d["target"]["key"] == "203.0.12.1"), None)
        assert found and found["kind"] == "rate_limit" and found["mode"] == "enforce"
        for _ in range(50):  # the alert is stored right after the decision is published
            alerts = httpx.get(plane.url + "/v1/alerts", headers=auth).json()["alerts"]
            if any(a["labels"]["target"] == "203.0.12.1" for a in alerts):
                break
            time.sleep(0.2)
        else:
            pytest.fail("no alert for the bot at /v1/alerts")
        for _ in range(50):
            if any(a["labels"]["alertname"] == "GatewatchBotDetected" for a in receiver.alertmanager()):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the Alertmanager receiver got no bot alert")
        assert "gatewatch_detectors_cycle_seconds" in httpx.get(plane.url + "/metrics").text
        assert (settings.data_dir / "m" / "bot-v1.joblib").exists()  # bootstrapped and versioned
    finally:
        detectors.stop()
        plane.stop()
