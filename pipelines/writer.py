"""Span writers: where decoded batches go. `ClickHouseWriter` inserts into `otel_traces`."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import TYPE_CHECKING, Protocol

from gatewatch.wire import varint
from pipelines import sqlmap
from pipelines.columns import SpanColumns
from pipelines.rawspans import RawSpans

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)


class SpanWriter(Protocol):
    """Stores a batch idempotently: writing the same batch with the same token twice stores it once."""

    def write(self, spans: SpanColumns | RawSpans, token: str) -> None:
        """Store every span of `spans` or raise."""


class ClickHouseWriter:
    """One insert per batch, deduplicated by token, rollups included.

    Raw batches on an embedded chDB store are mapped by ClickHouse from the protobuf bytes
    (`sqlmap`); a batch SQL cannot map, a server or a cluster gets the Python-built Native block.
    """

    def __init__(self, client: Client, database: str, cluster: str = "") -> None:
        self._client = client
        self._table = f"{database}.otel_traces"
        self._cluster = cluster
        # file() reads the engine's local files: only an in-process chDB sees ours.
        self.maps_protobuf = not cluster and type(client).__name__ == "ChdbClient"

    def write(self, spans: SpanColumns | RawSpans, token: str) -> None:
        if isinstance(spans, RawSpans):
            if self.maps_protobuf and self._write_protobuf(spans.payloads(), token):
                return
            spans = spans.columns()
        names, payload = spans.native()
        self._client.raw_insert(self._table, names, payload, settings=self._settings(token), fmt="Native")

    def _settings(self, token: str) -> dict[str, object]:
        settings: dict[str, object] = {
            "insert_deduplicate": 1,
            "insert_deduplication_token": token,
            # Replays must not count twice in the materialized-view rollups either.
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
        if self._cluster:
            # The Distributed table forwards the token only on synchronous inserts.
            settings["distributed_foreground_insert"] = 1
        return settings

    def _write_protobuf(self, payloads: list[bytes], token: str) -> bool:
        """INSERT ... SELECT over the length-delimited messages; False if SQL could not map them."""
        from clickhouse_connect.driver.exceptions import DatabaseError

        fd, path = tempfile.mkstemp(prefix="gatewatch-batch-", suffix=".pb")
        try:
            with os.fdopen(fd, "wb") as out:
                for payload in payloads:
                    out.write(varint(len(payload)))
                    out.write(payload)
            settings = {**self._settings(token), **sqlmap.format_settings()}
            self._client.command(sqlmap.insert_select(self._table, sqlmap.file_source(path)), settings=settings)
            return True
        except DatabaseError as exc:
            # Values only Python maps exactly, or bytes ClickHouse parses more strictly than upb: the
            # statement failed before storing anything, so the Python path inserts with the same token.
            # A store that is down fails that insert too, and the caller retries.
            log.debug("SQL mapping declined batch %s: %s", token, str(exc).splitlines()[0][:200])
            return False
        finally:
            os.unlink(path)

