"""The live loop as a Service: a detection cycle every `interval_s` in a background thread."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from detectors import metrics, registry
from detectors.alerting import Alerter, receivers_for
from detectors.config import DetectorConfig
from detectors.cycle import CycleResult, DetectionCycle
from detectors.restore import live_decisions_in_store
from detectors.sinks import DecisionPublisher
from gatewatch.decisions import utcnow
from gatewatch.settings import Settings
from gatewatch.spanlog import SpanLog, open_span_log

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)


class DetectorService:
    """Detectors for one store: features, scores, decisions to Kafka and ClickHouse, alerts."""

    name = "detectors"

    def __init__(self, settings: Settings, store: Client | None = None, span_log: SpanLog | None = None,
                 config: DetectorConfig | None = None) -> None:
        self.settings = settings
        self.config = config or DetectorConfig()
        self._store = store
        self._span_log = span_log
        self.cycle: DetectionCycle | None = None
        self.last: CycleResult | None = None
        self._publisher: DecisionPublisher | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the store and the decisions topic, load the latest model, start the loop."""
        from gatewatch.store import open_store
        from gatewatch.topics import ensure_topics, topic_specs
        from pipelines.migrate import migrate

        store = self._store or open_store(self.settings)
        migrate(store, self.settings)
        if self.settings.kafka and self._span_log is None:
            decisions = [s for s in topic_specs(self.settings) if s.name == self.settings.decisions_topic]
            ensure_topics(self.settings.kafka, decisions)
        span_log = self._span_log or open_span_log(self.settings)
        self._publisher = DecisionPublisher(self.settings, span_log, store)
        model_dir = self.config.models_path(self.settings.data_dir)
        model = registry.load_latest(model_dir)
        log.info("bot model: %s", f"version {model.metadata.get('version')}" if model else "none yet (bootstraps)")
        alerter = Alerter(receivers_for(self.config.alertmanager_url, self.config.webhook_url, store,
                                        self.settings.database), self.config.alert_resend_s)
        self.cycle = DetectionCycle(store, self.settings.database, self.config, self._publisher, alerter,
                                    model, model_dir)
        restored = self.cycle.restore(live_decisions_in_store(store, self.settings.database, utcnow()))
        log.info("restored %d live decisions from the decisions table", restored)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="detectors", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self.cycle is not None
        while not self._stop.is_set():
            try:
                self.last = self.cycle.run()
            except Exception:
                metrics.CYCLE_ERRORS.inc()
                log.exception("detection cycle failed; retrying next interval")
            self._stop.wait(self.config.interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the running cycle and release the producer."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout_s)
        if self._publisher:
            self._publisher.close()
