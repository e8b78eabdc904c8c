"""A short simulated scenario for the dashboard tests: OTel SDK spans, encoded as OTLP (the span-log
contract), stored by the real PipelineService; decisions, alerts and ground truth by their sinks.

Traffic: humans browse the shop through the gateway, a scraper bot hammers one route and gets
limited, a credential stuffer gets 401s, and checkout -> payment fails for a while (breaker opens).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client
    from opentelemetry.util.types import AttributeValue

    from gatewatch.settings import Settings

BOT = "203.0.113.7"
STUFFER = "203.0.113.50"
HUMANS = [f"198.51.100.{i}" for i in range(10, 22)]
ROUTES = [("GET", "/api/products", "catalog"), ("GET", "/api/cart", "storefront"),
          ("POST", "/api/checkout", "checkout"), ("POST", "/api/login", "auth")]


@dataclass(frozen=True)
class ScenarioWindow:
    """When the scenario happened: the dashboards' time range should cover it."""

    start: datetime
    end: datetime


class _Tracers:
    """One tracer provider per service (a resource names its service), all into one exporter."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self._tracers: dict[str, trace.Tracer] = {}

    def __call__(self, service: str) -> trace.Tracer:
        if service not in self._tracers:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self._tracers[service] = provider.get_tracer("gatewatch.test")
        return self._tracers[service]


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _request(tracers: _Tracers, at: datetime, client: str, route: tuple[str, str, str], status: int,
             outcome: str, rng: random.Random, breaker: str = "") -> None:
    method, path, service = route
    latency_ms = rng.uniform(5, 40) if status < 500 else rng.uniform(200, 900)
    end = at + timedelta(milliseconds=latency_ms)
    edge = tracers("gateway").start_span(
        f"{method} {path}", kind=SpanKind.SERVER, start_time=_ns(at),
        attributes={"http.request.method": method, "http.route": path, "url.path": path,
                    "http.response.status_code": status, "client.address": client,
                    "user_agent.original": "bot/1.0" if client == BOT else "Mozilla/5.0",
                    "gatewatch.ratelimit.outcome": outcome},
    )
    if status >= 500:
        edge.set_status(Status(StatusCode.ERROR, f"upstream answered {status}"))
    if status < 400 or status >= 500:
        ctx = trace.set_span_in_context(edge)
        call = tracers("gateway").start_span(
            f"{method} {path}", kind=SpanKind.CLIENT, context=ctx, start_time=_ns(at) + 1000,
            attributes={"peer.service": service, "http.request.method": method},
        )
        inner = tracers(service).start_span(f"{method} {path}", kind=SpanKind.SERVER,
                                            context=trace.set_span_in_context(call), start_time=_ns(at) + 2000)
        if service == "checkout":
            _payment(tracers, inner, at, status, breaker)
        inner.end(end_time=_ns(end) - 2000)
        call.end(end_time=_ns(end) - 1000)
    edge.end(end_time=_ns(end))


def _payment(tracers: _Tracers, parent: trace.Span, at: datetime, status: int, breaker: str) -> None:
    call = tracers("checkout").start_span(
        "POST /pay", kind=SpanKind.CLIENT, context=trace.set_span_in_context(parent), start_time=_ns(at) + 3000,
        attributes={"peer.service": "payment", "gatewatch.breaker.state": breaker},
    )
    if status >= 500:
        call.set_status(Status(StatusCode.ERROR, "payment unavailable"))
    call.end(end_time=_ns(at + timedelta(milliseconds=4)))


def generate_spans(start: datetime, minutes: int = 6, seed: int = 7) -> list[ReadableSpan]:
    """The scenario's spans: `minutes` of traffic from `start`, deterministic for a seed."""
    rng, tracers = random.Random(seed), _Tracers()
    fault = (start + timedelta(minutes=2), start + timedelta(minutes=4))
    for second in range(0, minutes * 60, 2):
        at = start + timedelta(seconds=second)
        in_fault = fault[0] <= at < fault[1]
        for _ in range(3):
            route = rng.choice(ROUTES)
            failing = route[2] == "checkout" and in_fault and rng.random() < 0.7
            breaker = ("open" if in_fault else "closed") if route[2] == "checkout" else ""
            _request(tracers, at + timedelta(milliseconds=rng.randint(0, 1900)), rng.choice(HUMANS), route,
                     503 if failing else 200, "allowed", rng, breaker)
        limited = second > 60
        _request(tracers, at, BOT, ROUTES[0], 429 if limited else 200, "limited" if limited else "allowed", rng)
        if second % 6 == 0:
            _request(tracers, at, STUFFER, ROUTES[3], 401, "allowed", rng)
        if second % 20 == 0:
            _request(tracers, at, rng.choice(HUMANS), ROUTES[1], 403, "allowed", rng)
    return list(tracers.exporter.get_finished_spans())


def otlp_messages(spans: list[ReadableSpan], per_message: int = 200) -> list[bytes]:
    """The spans as `otlp_spans` message values: serialized ExportTraceServiceRequests."""
    return [encode_spans(spans[i:i + per_message]).SerializeToString() for i in range(0, len(spans), per_message)]


def write_spans(client: Client, settings: Settings, messages: list[bytes], spans: int, timeout_s: float = 90) -> None:
    """Put OTLP messages on the span log and let the real PipelineService store them."""
    from gatewatch.spanlog import EmbeddedLog, Message
    from pipelines.service import PipelineService

    log = EmbeddedLog()
    log.producer(settings.spans_topic).send([Message(value) for value in messages])
    service = PipelineService(settings, log, client, metrics_port=None)
    service.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stored = client.command(f"SELECT count() FROM {settings.database}.otel_traces")
            assert isinstance(stored, int)  # a count: one number
            if stored >= spans:
                return
            time.sleep(0.2)
        raise AssertionError(f"the pipeline did not store {spans} spans in {timeout_s}s")
    finally:
        service.stop()


def write_detector_output(client: Client, settings: Settings, window: ScenarioWindow) -> None:
    """Decisions, alerts and ground truth as the detectors and the simulator record them."""
    from demo.groundtruth import StoreSink, TruthRow
    from detectors.alerting import StoreReceiver
    from detectors.sinks import DecisionPublisher
    from gatewatch.alerts import Alert, Severity
    from gatewatch.decisions import Decision, DecisionKind, Mode, Reason, Scope, Target
    from gatewatch.spanlog import EmbeddedLog

    start, hour = window.start, timedelta(hours=1)

    def decision(kind: DecisionKind, scope: Scope, key: str, at: timedelta, detector: str, score: float,
                 params: dict[str, float], features: dict[str, float] | None = None) -> Decision:
        return Decision(kind=kind, target=Target(scope=scope, key=key), params=params, mode=Mode.ENFORCE,
                        reason=Reason(detector=detector, score=score, top_features=features or {}),
                        created_at=start + at, expires_at=start + at + hour)

    decisions = [
        decision(DecisionKind.RATE_LIMIT, Scope.CLIENT, BOT, timedelta(seconds=60), "bot", 0.97,
                 {"rate_per_s": 2.0, "burst": 5}, {"req_rate": 0.6, "path_entropy": 0.3}),
        decision(DecisionKind.BLOCK, Scope.CLIENT, STUFFER, timedelta(seconds=90), "bot", 0.91,
                 {}, {"auth_failures": 0.8}),
        decision(DecisionKind.CIRCUIT_OPEN, Scope.EDGE, "checkout->payment", timedelta(minutes=2, seconds=20),
                 "spike", 0.88, {"open_s": 30}),
        decision(DecisionKind.CIRCUIT_CLOSE, Scope.EDGE, "checkout->payment", timedelta(minutes=4, seconds=30),
                 "spike", 0.1, {}),
        decision(DecisionKind.ROUTE_LIMIT, Scope.ROUTE, "/api/products", timedelta(minutes=1), "tuner", 0.5,
                 {"rate_per_s": 50.0}),
        decision(DecisionKind.ROUTE_LIMIT, Scope.ROUTE, "/api/products", timedelta(minutes=3), "tuner", 0.5,
                 {"rate_per_s": 35.0}),
    ]
    publisher = DecisionPublisher(settings, EmbeddedLog(), client)
    publisher(decisions)
    publisher.close()
    StoreReceiver(client, settings.database).send([
        Alert(fingerprint="bot-" + BOT, name="BotDetected", severity=Severity.WARNING, labels={"client": BOT},
              annotations={"summary": f"bot score 0.97 for {BOT}"}, starts_at=start + timedelta(seconds=60),
              decision_id=decisions[0].id),
        Alert(fingerprint="edge-checkout-payment", name="EdgeFailureSpike", severity=Severity.CRITICAL,
              labels={"edge": "checkout->payment"}, annotations={"summary": "checkout->payment errors 70%"},
              starts_at=start + timedelta(minutes=2, seconds=20), ends_at=start + timedelta(minutes=4, seconds=30),
              decision_id=decisions[2].id),
    ])
    StoreSink(client, settings.database).record([
        TruthRow("run1", "test", "bot", "scraper", "client", BOT, start, window.end),
        TruthRow("run1", "test", "fault", "errors", "edge", "checkout->payment",
                 start + timedelta(minutes=2), start + timedelta(minutes=4)),
    ])


def fill_store(client: Client, settings: Settings, minutes: int = 6) -> ScenarioWindow:
    """Run the whole scenario into the store; it ends one minute before now."""
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    window = ScenarioWindow(end - timedelta(minutes=minutes), end)
    spans = generate_spans(window.start, minutes)
    write_spans(client, settings, otlp_messages(spans), len(spans))
    write_detector_output(client, settings, window)
    return window


def test_scenario_spans_cover_every_role():
    spans = generate_spans(datetime(2025, 1, 1, tzinfo=UTC), minutes=1)
    services = {s.resource.attributes["service.name"] for s in spans}
    assert {"gateway", "catalog", "checkout", "auth", "storefront"} <= services
    statuses: set[AttributeValue] = set()
    for s in spans:
        assert s.attributes is not None  # the SDK's spans always have a (possibly empty) attribute map
        statuses.add(s.attributes.get("http.response.status_code"))
    assert {200, 401} <= statuses
    assert sum(len(m) for m in otlp_messages(spans)) > 0
