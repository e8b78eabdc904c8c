"""Delivery under faults, short variants: acknowledged spans are stored once, none lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.cases import DELIVERY_CASES, CaseEnv
from tests.faults.harness import Scale, render_table, run_case

SCALE = Scale.from_env()


@pytest.fixture
def env(kafka_settings, store, tmp_path: Path) -> CaseEnv:
    return CaseEnv(kafka_settings, store, tmp_path)


@pytest.mark.kafka
@pytest.mark.parametrize("name", list(DELIVERY_CASES))
def test_nothing_lost_nothing_duplicated(env: CaseEnv, name: str):
    result = run_case(name, lambda scale: DELIVERY_CASES[name](env, scale), SCALE)
    print("\n" + render_table([result]))
    assert result.verdict == "PASS", f"{render_table([result])}\n{result.detail}"
