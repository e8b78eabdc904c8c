"""The gateway at twice its route limit: sheds with 429, keeps admitted latency bounded, recovers."""

from __future__ import annotations

from tests.faults.harness import Scale, render_table, run_case
from tests.faults.overload import gateway_overload


def test_gateway_sheds_load_and_recovers(settings):
    result = run_case("gateway_overload", lambda scale: gateway_overload(settings, scale), Scale.from_env())
    print("\n" + render_table([result]))
    assert result.verdict == "PASS", f"{render_table([result])}\n{result.detail}"
