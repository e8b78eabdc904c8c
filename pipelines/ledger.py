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


def group_token(ranges: Sequence[OffsetRange]) -> str:
    """The token of one insert covering `ranges`: a single range keeps its own token."""
    return "+".join(r.token for r in sorted(ranges, key=lambda r: (r.topic, r.partition)))


class BatchLedger:
    """Reads and writes `pipeline_batches` through the store client."""

    def __init__(self, client: Client, database: str) -> None:
        self._client = client
        self._table = f"{database}.pipeline_batches"

    def record(self, inserts: Sequence[Sequence[OffsetRange]]) -> None:
        """Record the ranges of each insert about to happen (one small insert for all of them)."""
        rows = [
            [r.topic, r.partition, r.first, r.last, group_token(ranges) if len(ranges) > 1 else ""]
            for ranges in inserts
            for r in ranges
        ]
        if rows:
            self._client.insert(
                self._table, rows, column_names=["Topic", "Partition", "FirstOffset", "LastOffset", "Batch"]
            )

    def last(self, topic: str, partition: int) -> list[OffsetRange]:
        """The ranges of the most recent insert recorded for a partition (its own range first); [] if none."""
        rows = self._client.query(
            f"SELECT FirstOffset, LastOffset, Batch FROM {self._table} "
            "WHERE Topic = %(t)s AND Partition = %(p)s ORDER BY LastOffset DESC LIMIT 1",
            parameters={"t": topic, "p": partition},
        ).result_rows
        if not rows:
            return []
        own = OffsetRange(topic, partition, int(rows[0][0]), int(rows[0][1]))
        if not rows[0][2]:
            return [own]
        others = self._client.query(
            f"SELECT DISTINCT Topic, Partition, FirstOffset, LastOffset FROM {self._table} "
            "WHERE Batch = %(b)s AND NOT (Topic = %(t)s AND Partition = %(p)s)",
            parameters={"b": rows[0][2], "t": topic, "p": partition},
        ).result_rows
        return [own, *(OffsetRange(str(t), int(p), int(f), int(la)) for t, p, f, la in others)]
