"""Ground truth: what the simulator injected (bots, faults, humans) with times, in the store."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

COLUMNS = ("RunId", "Scenario", "Kind", "Label", "Scope", "EntityKey", "StartAt", "EndAt", "Details")


@dataclass(frozen=True)
class TruthRow:
    """One injected entity: kind bot|fault|human, scope client|edge, key = client address or `a->b`."""

    run_id: str
    scenario: str
    kind: str
    label: str
    scope: str
    key: str
    start_at: datetime
    end_at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def values(self) -> list[Any]:
        return [
            self.run_id, self.scenario, self.kind, self.label, self.scope, self.key,
            self.start_at, self.end_at, json.dumps(self.details, sort_keys=True),
        ]


class TruthSink(ABC):
    """Where ground truth goes."""

    @abstractmethod
    def record(self, rows: Sequence[TruthRow]) -> None:
        """Store rows (blocking)."""


class MemorySink(TruthSink):
    """Keeps rows in a list (tests, dry runs)."""

    def __init__(self) -> None:
        self.rows: list[TruthRow] = []

    def record(self, rows: Sequence[TruthRow]) -> None:
        self.rows.extend(rows)


class StoreSink(TruthSink):
    """Inserts rows into `<database>.ground_truth`."""

    def __init__(self, client: Client, database: str) -> None:
        self._client, self._table = client, f"{database}.ground_truth"
        self._lock = threading.Lock()  # the simulator records from its own loop thread

    def record(self, rows: Sequence[TruthRow]) -> None:
        if rows:
            with self._lock:
                self._client.insert(self._table, [r.values() for r in rows], column_names=list(COLUMNS))


def load_truth(client: Client, database: str, run_id: str) -> list[TruthRow]:
    """Every ground-truth row of one run, in start order."""
    result = client.query(
        f"SELECT {', '.join(COLUMNS)} FROM {database}.ground_truth WHERE RunId = %(run)s ORDER BY StartAt, EntityKey",
        parameters={"run": run_id},
    )
    return [
        TruthRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8] or "{}")) for r in result.result_rows
    ]
