"""Health checks of the stack's shared services, for `gatewatch status` and readiness probes."""

from __future__ import annotations

from dataclasses import dataclass

from gatewatch.errors import GatewatchError
from gatewatch.settings import Settings


@dataclass(frozen=True)
class Check:
    """One health check's outcome."""

    name: str
    ok: bool
    detail: str


def store_health(settings: Settings) -> Check:
    """Whether the store answers and its schema is migrated."""
    from gatewatch.store import open_store, redact
    from pipelines.migrate import status

    try:
        pending = [m for m in status(open_store(settings), settings) if not m.applied]
    except GatewatchError as exc:
        return Check("store", False, str(exc))
    where = redact(settings.clickhouse_dsn)
    if pending:
        return Check("store", False, f"{where}: {len(pending)} migrations pending (run gatewatch db migrate)")
    return Check("store", True, f"{where}: schema up to date")


def span_log_health(settings: Settings) -> Check:
    """Whether the span log accepts writes (always true for the embedded log)."""
    if not settings.kafka:
        return Check("span log", True, "embedded in-process log (set GATEWATCH_KAFKA for Kafka)")
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka, request_timeout_ms=5000, api_version_auto_timeout_ms=5000
        )
        topics = admin.list_topics()
        admin.close()
    except KafkaError as exc:
        return Check("span log", False, f"Kafka at {settings.kafka} unreachable: {type(exc).__name__}")
    return Check("span log", True, f"Kafka at {settings.kafka}, {len(topics)} topics")


def stack_health(settings: Settings) -> list[Check]:
    """All shared-service checks."""
    return [store_health(settings), span_log_health(settings)]
