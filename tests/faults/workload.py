"""Traffic for the fault cases: OTLP/HTTP exports with known span ids, and store-side counting.

The sender behaves like the OpenTelemetry SDK exporter: it retries a request on connection
errors, 429, 502, 503 and 504 until a deadline, and counts a span as acknowledged only when its
request got a 200 without rejected spans. Every span carries a run id as its service name, so a
case counts exactly its own rows.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

RETRYABLE = {429, 502, 503, 504}


def _attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_request(service: str, count: int) -> tuple[ExportTraceServiceRequest, list[str]]:
    """An export of `count` server spans of one trace; returns it with the spans' hex ids."""
    now = time.time_ns()
    trace_id = os.urandom(16)
    spans, ids = [], []
    for index in range(count):
        span_id = os.urandom(8)
        ids.append(span_id.hex())
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=span_id,
                name="GET /api/items",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now - 2_000_000 - index,
                end_time_unix_nano=now - index,
                attributes=[
                    _attr("http.request.method", "GET"),
                    _attr("http.route", "/api/items"),
                    _attr("client.address", "203.0.113.7"),
                ],
            )
        )
    resource = Resource(attributes=[_attr("service.name", service)])
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request, ids


@dataclass
class SendStats:
    """What the sender saw: spans sent and acknowledged, and the status of every attempt."""

    sent: int = 0
    acked_ids: set[str] = field(default_factory=set)
    statuses: dict[str, int] = field(default_factory=dict)
    longest_outage_s: float = 0.0  # longest time from a refused attempt to the next success
    lock: threading.Lock = field(default_factory=threading.Lock)
    _failing_since: float | None = None

    def note(self, status: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != "200":
                self._failing_since = self._failing_since or now
            elif self._failing_since is not None:
                self.longest_outage_s = max(self.longest_outage_s, now - self._failing_since)
                self._failing_since = None

    def ack(self, ids: list[str]) -> None:
        with self.lock:
            self.acked_ids.update(ids)


class OtlpSender:
    """Sends exports to a collector's OTLP/HTTP endpoint on a background thread until stopped."""

    def __init__(self, endpoint: str, service: str, spans_per_request: int = 50,
                 rate_per_s: float = 200.0, retry_for_s: float = 60.0) -> None:
        self.url = endpoint.rstrip("/") + "/v1/traces"
        self.service = service
        self.spans_per_request = spans_per_request
        self.interval = spans_per_request / rate_per_s
        self.retry_for_s = retry_for_s
        self.stats = SendStats()
        self._stop = threading.Event()
        self._budget = 0
        self._thread: threading.Thread | None = None

    def start(self, total_spans: int) -> None:
        """Send up to `total_spans` spans (whole requests) at the configured rate."""
        self._budget = total_spans
        self._thread = threading.Thread(target=self._run, name="otlp-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> SendStats:
        """Stop starting new requests, let the one in flight finish its retries."""
        self._stop.set()
        self.join(timeout_s)
        return self.stats

    def join(self, timeout_s: float) -> None:
        if self._thread:
            self._thread.join(timeout_s)

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set() and self.stats.sent < self._budget:
                started = time.monotonic()
                request, ids = make_request(self.service, self.spans_per_request)
                self.stats.sent += len(ids)
                if self._deliver(client, request.SerializeToString()):
                    self.stats.ack(ids)
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _deliver(self, client: httpx.Client, body: bytes) -> bool:
        deadline = time.monotonic() + self.retry_for_s
        backoff = 0.05
        while time.monotonic() < deadline:
            status = self._attempt(client, body)
            self.stats.note(status)
            if status == "200":
                return True
            if status not in {"conn", "timeout"} and int(status) not in RETRYABLE:
                return False
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
        return False

    def _attempt(self, client: httpx.Client, body: bytes) -> str:
        try:
            response = client.post(self.url, content=body, headers={"Content-Type": "application/x-protobuf"})
        except httpx.TimeoutException:
            return "timeout"
        except httpx.TransportError:
            return "conn"
        if response.status_code == 200 and _rejected(response.content):
            return "partial"
        return str(response.status_code)


def _rejected(body: bytes) -> int:
    reply = ExportTraceServiceResponse()
    try:
        reply.ParseFromString(body)
    except Exception:  # a JSON or empty body: no partial success reported
        return 0
    return int(reply.partial_success.rejected_spans)


def run_id() -> str:
    """A service name no other case uses."""
    return f"rel-{uuid.uuid4().hex[:10]}"


def stored_span_ids(client: Any, database: str, service: str) -> list[str]:
    """Every stored SpanId of this run, one per row (duplicates show as repeats)."""
    rows = client.query(
        f"SELECT lower(SpanId) FROM {database}.otel_traces WHERE ServiceName = %(s)s", parameters={"s": service}
    ).result_rows
    return [str(row[0]) for row in rows]


def wait_stored(count_rows: Any, want: int, timeout_s: float = 90.0, settle_s: float = 2.0) -> list[str]:
    """Poll `count_rows()` until it holds `want` distinct ids (or time runs out), then settle.

    The settle pause lets late duplicates land, so they are counted rather than missed.
    """
    deadline = time.monotonic() + timeout_s
    ids: list[str] = count_rows()
    while len(set(ids)) < want and time.monotonic() < deadline:
        time.sleep(0.5)
        ids = count_rows()
    time.sleep(settle_s)
    return list(count_rows())


def topic_lag(bootstrap: str, topic: str) -> int | None:
    """Messages of `topic` not yet committed by the groups consuming it (None: no group yet).

    Topics are unique per case, so whichever group has offsets on it is the pipeline's.
    """
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(parts)
        groups = [group_id for group_id, _protocol in admin.list_consumer_groups()]
        offsets = [admin.list_consumer_group_offsets(group, partitions=parts) for group in groups]
        lags = [
            sum(ends[tp] - max(committed[tp].offset, 0) if tp in committed else ends[tp] for tp in parts)
            for committed in offsets
            if any(meta.offset >= 0 for meta in committed.values())
        ]
        return max(lags) if lags else None
    finally:
        consumer.close()
        admin.close()


def wait_drained(bootstrap: str, topic: str, timeout_s: float = 120.0) -> bool:
    """Block until the pipeline's group has committed everything in `topic`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if topic_lag(bootstrap, topic) == 0:
            return True
        time.sleep(1.0)
    return False
