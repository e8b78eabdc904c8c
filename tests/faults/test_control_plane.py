"""Control plane down: proxies fail static and still honour expiry."""

from __future__ import annotations

from pathlib import Path

from tests.faults.cases import CaseEnv
from tests.faults.harness import Scale, render_table, run_case
from tests.faults.more_cases import control_plane_down


def test_proxies_keep_decisions_and_drop_them_at_expiry(settings, tmp_path: Path):
    env = CaseEnv(settings, None, tmp_path)
    result = run_case("control_plane_down", lambda scale: control_plane_down(env, scale), Scale.short())
    assert result.verdict == "PASS", f"{render_table([result])}\n{result.detail}"
