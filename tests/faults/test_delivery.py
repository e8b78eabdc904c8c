"""Delivery under faults, short variants: acknowledged spans are stored once (at most the requests in
flight at a collector kill twice), none lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.cases import DELIVERY_CASES, CaseEnv
from tests.faults.harness import Scale, delivery, render_table, run_case

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


def test_duplicates_fail_a_case_unless_its_fault_allows_them():
    acked = {"a", "b"}
    assert delivery(2, acked, ["a", "b"]).ok
    assert not delivery(2, acked, ["a", "b", "b"]).ok
    assert delivery(2, acked, ["a", "b", "b"], allowed_duplicates=1).ok
    assert not delivery(2, acked, ["a", "b", "b", "a"], allowed_duplicates=1).ok
    assert not delivery(2, acked, ["a"], allowed_duplicates=5).ok  # a loss is never allowed
