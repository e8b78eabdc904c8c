"""The batch ledger: which Kafka offset range each insert covered, recorded before the insert.

Its last range per partition lets a restarted pipeline rebuild the very same batch, so the insert
deduplication token repeats and ClickHouse drops the replay (effectively exactly once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


@dataclass(frozen=True)
class OffsetRange:
    """Inclusive offsets of one batch of one partition."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def token(self) -> str:
        """The insert deduplication token of the batch: the same range gives the same token."""
        return f"{self.topic}/{self.partition}/{self.first}-{self.last}"


class BatchLedger:
    """Reads and writes `pipeline_batches` through the store client."""

    def __init__(self, client: Client, database: str) -> None:
        self._client = client
        self._table = f"{database}.pipeline_batches"

    def record(self, ranges: Sequence[OffsetRange]) -> None:
        """Record the ranges about to be inserted (one small insert)."""
        if ranges:
            self._client.insert(
                self._table,
                [[r.topic, r.partition, r.first, r.last] for r in ranges],
                column_names=["Topic", "Partition", "FirstOffset", "LastOffset"],
            )

    def last(self, topic: str, partition: int) -> OffsetRange | None:
        """The most recent range recorded for a partition, if any."""
        rows = self._client.query(
            f"SELECT FirstOffset, LastOffset FROM {self._table} "
            "WHERE Topic = %(t)s AND Partition = %(p)s ORDER BY LastOffset DESC LIMIT 1",
            parameters={"t": topic, "p": partition},
        ).result_rows
        return OffsetRange(topic, partition, int(rows[0][0]), int(rows[0][1])) if rows else None
