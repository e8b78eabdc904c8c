"""Span writers: where decoded batches go. `ClickHouseWriter` inserts into `otel_traces`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pipelines.columns import SpanColumns

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


class SpanWriter(Protocol):
    """Stores a batch idempotently: writing the same batch with the same token twice stores it once."""

    def write(self, columns: SpanColumns, token: str) -> None:
        """Store every span of `columns` or raise."""


class ClickHouseWriter:
    """One Native-format insert per batch, deduplicated by token, rollups included."""

    def __init__(self, client: Client, database: str, cluster: str = "") -> None:
        self._client = client
        self._table = f"{database}.otel_traces"
        self._cluster = cluster

    def write(self, columns: SpanColumns, token: str) -> None:
        names, payload = columns.native()
        settings: dict[str, object] = {
            "insert_deduplicate": 1,
            "insert_deduplication_token": token,
            # Replays must not count twice in the materialized-view rollups either.
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
        if self._cluster:
            # The Distributed table forwards the token only on synchronous inserts.
            settings["distributed_foreground_insert"] = 1
        self._client.raw_insert(self._table, names, payload, settings=settings, fmt="Native")
