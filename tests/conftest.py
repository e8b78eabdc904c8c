"""Shared fixtures: one real Kafka broker per session, one chDB store per process.

chDB allows a single embedded engine per process, so every test shares one store path and gets
a database of its own; Kafka tests get topics of their own. Set GATEWATCH_KAFKA to reuse a broker
that is already running (as `make test` does); otherwise the session starts one itself.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gatewatch import devkafka
from gatewatch.settings import Settings
from gatewatch.store import connect

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

STORE_DIR = Path(tempfile.mkdtemp(prefix="gatewatch-test-store-"))
STORE_DSN = f"chdb://{STORE_DIR}"


def unique(prefix: str) -> str:
    """A name no other test uses: `prefix_<8 hex>`."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker on 127.0.0.1."""
    given = os.environ.get("GATEWATCH_KAFKA")
    if given:
        yield given
        return
    state = tmp_path_factory.mktemp("kafka")
    broker = devkafka.start(state)
    try:
        yield broker.bootstrap
    finally:
        devkafka.stop(state)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded settings with a database and topics of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka="",
        clickhouse=STORE_DSN,
        database=f"gw_test_{tag}",
        data_dir=tmp_path,
        spans_topic=f"otlp_spans_{tag}",
        dlq_topic=f"otlp_spans_{tag}.dlq",
        decisions_topic=f"gatewatch.decisions_{tag}",
    )


@pytest.fixture
def kafka_settings(settings: Settings, kafka_bootstrap: str) -> Settings:
    """The same settings, with the real Kafka broker as span log."""
    return settings.model_copy(update={"kafka": kafka_bootstrap})


@pytest.fixture
def store(settings: Settings) -> Iterator[Client]:
    """A clickhouse-connect client on chDB with this test's database migrated."""
    from pipelines.migrate import migrate

    client = connect(STORE_DSN)
    migrate(client, settings)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {settings.database}")
