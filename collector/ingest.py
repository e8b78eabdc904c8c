"""The protocol-independent core: validate, split per trace, write durably, count.

Both receivers hand it decoded requests; a request is answered with success only after the
span log has durably accepted every message built from it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.errors import Backpressure, Busy, InvalidPayload
from collector.metrics import CollectorMetrics
from collector.readiness import SpanLogReadiness
from collector.split import split_by_trace
from gatewatch.errors import SpanLogFull, SpanLogUnavailable
from gatewatch.spanlog import LogProducer, Message


@dataclass(frozen=True)
class ExportOutcome:
    """What a successful export answers: spans stored, and spans rejected with why."""

    accepted: int
    rejected: int = 0
    error_message: str = ""


@dataclass(frozen=True)
class IngestLimits:
    """Knobs of the ingest path."""

    max_message_bytes: int = 1_000_000
    retry_after_s: int = 5
    send_timeout_s: float = 5.0
    max_pending: int = 64  # requests decoding or waiting for the span log before new ones get 429


class Ingestor:
    """Turns decoded export requests into durable span-log messages, or a typed refusal."""

    def __init__(
        self,
        producer: LogProducer,
        readiness: SpanLogReadiness,
        metrics: CollectorMetrics,
        limits: IngestLimits | None = None,
    ) -> None:
        self._producer = producer
        self._readiness = readiness
        self._metrics = metrics
        self.limits = limits or IngestLimits()
        self._pending = 0
        self._lock = threading.Lock()

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one slot of the pending-request queue, or raise Busy when it is full."""
        with self._lock:
            if self._pending >= self.limits.max_pending:
                raise Busy(
                    f"collector queue full ({self._pending} requests pending): retry later",
                    self.limits.retry_after_s,
                )
            self._pending += 1
            self._metrics.queue_depth.set(self._pending)
        try:
            yield
        finally:
            with self._lock:
                self._pending -= 1
                self._metrics.queue_depth.set(self._pending)

    def export(self, request: ExportTraceServiceRequest, protocol: str) -> ExportOutcome:
        """Store the request's valid spans; raise InvalidPayload if none is valid, Backpressure if not stored."""
        split = split_by_trace(request, self.limits.max_message_bytes)
        total = split.accepted + split.rejected
        self._metrics.spans_received.labels(protocol).inc(total)
        for reason, count in split.errors.items():
            self._metrics.spans_rejected.labels(protocol, reason).inc(count)
        if total and not split.accepted:
            raise InvalidPayload(f"no valid span in the request: {split.error_message}")
        if split.messages:
            try:
                self._write(split.messages)
            except Backpressure as exc:
                self._metrics.spans_rejected.labels(protocol, exc.reason).inc(split.accepted)
                raise
            self._metrics.spans_accepted.labels(protocol).inc(split.accepted)
            self._metrics.messages.inc(len(split.messages))
        return ExportOutcome(split.accepted, split.rejected, split.error_message)

    def _write(self, messages: list[Message]) -> None:
        retry_after = self.limits.retry_after_s
        if not self._readiness.reachable():
            self._metrics.ready.set(0)
            raise Backpressure("the span log is unreachable: retry later", retry_after)
        started = time.perf_counter()
        try:
            self._producer.send(messages, timeout_s=self.limits.send_timeout_s)
        except SpanLogFull as exc:
            raise Busy(f"the span log is full: {exc}", retry_after) from None
        except SpanLogUnavailable as exc:
            self._readiness.record_write(False)
            self._metrics.ready.set(0)
            raise Backpressure(f"the span log did not accept the batch: {exc}", retry_after) from None
        finally:
            self._metrics.send_latency.observe(time.perf_counter() - started)
        self._readiness.record_write(True)
        self._metrics.ready.set(1)

    def ready(self) -> bool:
        """True while the span log is reachable (for /readyz)."""
        ready = self._readiness.ready()
        self._metrics.ready.set(1 if ready else 0)
        return ready
