"""Every reliability case by name, with how to build its environment outside pytest."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from gatewatch.settings import Settings
from tests.faults.cases import DELIVERY_CASES, CaseEnv
from tests.faults.harness import CaseResult, Scale

EnvCase = Callable[[CaseEnv, Scale], CaseResult]


def all_cases() -> dict[str, EnvCase]:
    """Delivery faults first, then the control-plane, overload, fuzz and security cases."""
    from tests.faults.more_cases import more_cases

    return {**DELIVERY_CASES, **more_cases()}


def case_env(base: Path, store_dsn: str, kafka: str, name: str) -> CaseEnv:
    """A fresh database, topics and scratch dir for one case, on the runner's own store."""
    from gatewatch.store import connect
    from pipelines.migrate import migrate

    tag = uuid.uuid4().hex[:8]
    workdir = base / f"{name}-{tag}"
    workdir.mkdir(parents=True)
    settings = Settings(
        kafka=kafka, clickhouse=store_dsn, database=f"gw_rel_{tag}", data_dir=workdir,
        spans_topic=f"otlp_spans_rel_{tag}", dlq_topic=f"otlp_spans_rel_{tag}.dlq",
        decisions_topic=f"gatewatch.decisions_rel_{tag}",
    )
    client = connect(store_dsn)
    migrate(client, settings)
    return CaseEnv(settings, client, workdir)
