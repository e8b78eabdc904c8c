"""Where decisions go: the compacted `gatewatch.decisions` topic and the `decisions` table."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gatewatch.decisions import Decision
from gatewatch.settings import Settings
from gatewatch.spanlog import LogProducer, Message, SpanLog

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

DECISION_COLUMNS = ["Id", "Kind", "Scope", "TargetKey", "Params", "Detector", "Score", "TopFeatures", "Mode",
                    "CreatedAt", "ExpiresAt", "Decision"]


def decision_row(d: Decision) -> list[object]:
    """One `decisions` table row."""
    return [d.id, d.kind.value, d.target.scope.value, d.target.key, json.dumps(d.params, sort_keys=True),
            d.reason.detector, float(d.reason.score), dict(d.reason.top_features), d.mode.value,
            d.created_at, d.expires_at, d.model_dump_json()]


class DecisionPublisher:
    """Publishes decisions to the topic (key = target ref) and the table; the topic write must succeed."""

    def __init__(self, settings: Settings, span_log: SpanLog, store: Client) -> None:
        self._db = settings.database
        self._store = store
        self._producer: LogProducer = span_log.producer(settings.decisions_topic)

    def __call__(self, decisions: Sequence[Decision]) -> None:
        """Send to Kafka first (what proxies act on), then record them in ClickHouse."""
        self._producer.send([Message(d.to_json(), d.target.ref().encode()) for d in decisions])
        try:
            self._store.insert(f"{self._db}.decisions", [decision_row(d) for d in decisions],
                               column_names=DECISION_COLUMNS)
        except Exception as exc:  # the topic already has them; the table is the record, retry is not worth a stall
            log.warning("could not record %d decisions in ClickHouse: %s", len(decisions), exc)

    def close(self) -> None:
        """Flush and release the producer."""
        self._producer.close()
