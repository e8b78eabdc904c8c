"""Versioned, idempotent schema migrations for the `gatewatch` database.

Migrations are `migrations/NNNN_name.sql` files: `;`-terminated statements with `$placeholders`
filled from the settings (database, cluster engines, TTL). A statement preceded by the comment
`-- cluster-only` runs only when a ClickHouse cluster is configured.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import TYPE_CHECKING

from gatewatch.errors import GatewatchError
from gatewatch.store import first_line

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from gatewatch.settings import Settings

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name, statements and checksum."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MigrationStatus:
    """Whether a migration is applied."""

    version: int
    name: str
    applied: bool


def available_migrations() -> list[Migration]:
    """All migration files shipped with the package, in version order."""
    found = []
    for entry in resources.files("pipelines.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def template_values(settings: Settings) -> dict[str, str]:
    """Placeholder values: engines and names for single node or cluster, TTL clauses."""
    for name in (settings.database, settings.cluster or "x"):
        if not _IDENT.match(name):
            raise GatewatchError(f"invalid ClickHouse identifier {name!r}: use letters, digits and _")
    cluster = settings.cluster
    replicated = "Replicated" if cluster else ""
    ttl = settings.traces_ttl_days
    return {
        "db": settings.database,
        "cluster": cluster,
        "on_cluster": f"ON CLUSTER {cluster}" if cluster else "",
        "traces_local": "otel_traces_local" if cluster else "otel_traces",
        "traffic_local": "traffic_1m_local" if cluster else "traffic_1m",
        "edges_local": "edges_1m_local" if cluster else "edges_1m",
        "client_requests_local": "client_requests_local" if cluster else "client_requests",
        "engine_mergetree": f"{replicated}MergeTree()",
        "engine_replacing": f"{replicated}ReplacingMergeTree()",
        "engine_replacing_updated": f"{replicated}ReplacingMergeTree(UpdatedAt)",
        "engine_aggregating": f"{replicated}AggregatingMergeTree()",
        "engine_summing": f"{replicated}SummingMergeTree()",
        "dedup_window": (
            "replicated_deduplication_window = 10000" if cluster
            else "non_replicated_deduplication_window = 10000"
        ),
        "traces_ttl": f"TTL toDateTime(Timestamp) + toIntervalDay({ttl})" if ttl else "",
        "lookup_ttl": f"TTL Start + toIntervalDay({ttl})" if ttl else "",
    }


def statements(migration: Migration, values: dict[str, str]) -> list[str]:
    """The migration's SQL statements rendered for these values, cluster-only ones filtered."""
    rendered = Template(migration.sql).substitute(values)
    result = []
    for chunk in re.split(r";\s*(?:\n|$)", rendered):
        lines = chunk.strip().splitlines()
        if not any(line.strip() and not line.strip().startswith("--") for line in lines):
            continue
        if any(line.strip() == "-- cluster-only" for line in lines) and not values["cluster"]:
            continue
        result.append(chunk.strip())
    return result


def _ensure_bookkeeping(client: Client, settings: Settings) -> None:
    values = template_values(settings)
    client.command(f"CREATE DATABASE IF NOT EXISTS {settings.database} {values['on_cluster']}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {settings.database}.schema_migrations {values['on_cluster']} "
        "(Version UInt32, Name String, Checksum String, AppliedAt DateTime DEFAULT now()) "
        f"ENGINE = {values['engine_replacing']} ORDER BY Version"
    )


def applied_versions(client: Client, settings: Settings) -> set[int]:
    """Versions already recorded in `schema_migrations`."""
    _ensure_bookkeeping(client, settings)
    rows = client.query(f"SELECT DISTINCT Version FROM {settings.database}.schema_migrations").result_rows
    return {int(row[0]) for row in rows}


def status(client: Client, settings: Settings) -> list[MigrationStatus]:
    """Every known migration and whether it is applied."""
    done = applied_versions(client, settings)
    return [MigrationStatus(m.version, m.name, m.version in done) for m in available_migrations()]


def migrate(client: Client, settings: Settings) -> list[Migration]:
    """Apply pending migrations in order; returns what was applied (empty when up to date)."""
    done = applied_versions(client, settings)
    values = template_values(settings)
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        for statement in statements(migration, values):
            try:
                client.command(statement)
            except Exception as exc:
                raise GatewatchError(
                    f"migration {migration.version:04d}_{migration.name} failed: {first_line(exc)}"
                ) from exc
        client.insert(
            f"{settings.database}.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["Version", "Name", "Checksum"],
        )
        applied.append(migration)
    return applied
