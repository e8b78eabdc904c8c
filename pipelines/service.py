"""`PipelineService`: the pipeline as a gatewatch Service (a consumer thread plus /metrics)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gatewatch.errors import GatewatchError
from gatewatch.settings import Settings
from gatewatch.spanlog import SpanLog, open_span_log
from pipelines.dlq import DeadLetters
from pipelines.ledger import BatchLedger
from pipelines.metrics import PipelineMetrics
from pipelines.pipeline import Pipeline
from pipelines.retry import Abandoned, Backoff
from pipelines.writer import ClickHouseWriter

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

# Test hook: exit hard right after the N-th flush inserted and before it committed its offsets.
CRASH_ENV = "GATEWATCH_PIPELINE_CRASH_AFTER_INSERTS"
_USE_SETTINGS = -1


class PipelineService:
    """Consumes `settings.spans_topic` in `settings.pipeline_group` into ClickHouse `otel_traces`.

    `metrics_port`: default settings.pipeline_metrics_port; None disables /metrics (embedded hosts).
    """

    name = "pipeline"

    def __init__(
        self,
        settings: Settings,
        span_log: SpanLog | None = None,
        store: Client | None = None,
        metrics_port: int | None = _USE_SETTINGS,
    ) -> None:
        self.settings = settings
        self._span_log = span_log
        self._store = store
        self._metrics_port = settings.pipeline_metrics_port if metrics_port == _USE_SETTINGS else metrics_port
        self.metrics = PipelineMetrics()
        self.metrics_port: int | None = None
        self.pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._dead_letters: DeadLetters | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """Migrate the schema, join the consumer group, start consuming; raises GatewatchError."""
        from gatewatch.store import open_store
        from gatewatch.topics import ensure_topics, topic_specs
        from pipelines.migrate import migrate

        settings = self.settings
        store = self._store or open_store(settings)
        migrate(store, settings)
        if settings.kafka:
            try:
                ensure_topics(settings.kafka, topic_specs(settings))
                _wait_for_partitions(settings.kafka, settings.spans_topic)
            except Exception as exc:
                raise GatewatchError(f"cannot create Kafka topics at {settings.kafka}: {exc}") from None
        span_log = self._span_log or open_span_log(settings)
        consumer = span_log.consumer(settings.spans_topic, settings.pipeline_group)
        self._dead_letters = DeadLetters(span_log.producer(settings.dlq_topic))
        self.pipeline = Pipeline(
            consumer,
            ClickHouseWriter(store, settings.database, settings.cluster),
            BatchLedger(store, settings.database),
            self._dead_letters,
            self.metrics,
            batch_rows=settings.pipeline_batch_rows,
            batch_seconds=settings.pipeline_batch_seconds,
            backoff=Backoff(),
            after_insert=_crash_hook(),
            read_range=lambda r: span_log.read(r.topic, r.partition, r.first, r.last),
        )
        if self._metrics_port is not None:
            self.metrics_port = self.metrics.serve(settings.host, self._metrics_port)
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name="gatewatch-pipeline", daemon=True)
        self._thread.start()
        log.info("pipeline consuming %s as group %s", settings.spans_topic, settings.pipeline_group)

    def _run(self) -> None:
        assert self.pipeline is not None
        try:
            while not self._stop.is_set():
                self.pipeline.step(min(0.2, self.settings.pipeline_batch_seconds))
            self.pipeline.flush()
        except Abandoned as exc:
            log.warning("pipeline stopped with an uncommitted batch (it will be replayed): %s", exc)
        except BaseException as exc:
            self.error = exc
            log.exception("pipeline stopped on an unexpected error")
        finally:
            self._consumer.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Flush the current batch and commit it; give up on the store after ~timeout_s."""
        if self._thread is None:
            return
        self._stop.set()
        if self.pipeline is not None:
            self.pipeline.backoff.deadline = time.monotonic() + timeout_s * 0.8
            self.pipeline.backoff.abandon.set()
        self._thread.join(timeout_s)
        self._thread = None
        if self._dead_letters is not None:
            self._dead_letters.close()
        self.metrics.close()


def _crash_hook() -> Callable[[], None] | None:
    after = int(os.environ.get(CRASH_ENV, "0") or 0)
    if after <= 0:
        return None
    count = [0]

    def crash() -> None:
        count[0] += 1
        if count[0] >= after:
            os._exit(75)

    return crash


def _wait_for_partitions(bootstrap: str, topic: str, timeout_s: float = 15.0) -> None:
    """Wait until the brokers report the topic's partitions: a group joined earlier gets none."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise GatewatchError(f"Kafka topic {topic} has no partitions after {timeout_s:.0f}s")
            time.sleep(0.1)
    finally:
        consumer.close()
