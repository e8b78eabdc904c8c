"""Cases beyond delivery: the control plane going away, and (registered below) overload, fuzz
campaigns and security checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from gatewatch.decisions import Decision, DecisionKind, Reason, Scope, Target
from gatewatch.devkafka import free_port
from tests.faults.cases import CaseEnv
from tests.faults.harness import FAIL, PASS, CaseResult, Scale

TOKEN = "reliability-token-0123456789"


def _decision(key: str, ttl_s: float) -> Decision:
    return Decision.new(DecisionKind.BLOCK, Target(scope=Scope.CLIENT, key=key), Reason(detector="reliability"),
                        timedelta(seconds=ttl_s))


def control_plane_down(env: CaseEnv, scale: Scale) -> CaseResult:
    """Proxies keep the decisions they had while the control plane is down, drop each at expiry,
    and pick up new ones once it is back."""
    result = CaseResult(
        "control_plane_down",
        "proxy client holds 2 decisions (expiring in 4 s and 120 s); control plane stopped 6 s, then restarted "
        "with a third",
        "both kept while down, the short one dropped at its expiry, the long one kept, the new one received",
    )
    return asyncio.run(_control_plane_down(env, result))


async def _control_plane_down(env: CaseEnv, result: CaseResult) -> CaseResult:
    from detectors.board import DecisionBoard
    from detectors.controlplane import ControlPlaneService
    from proxy.controlplane import ControlPlaneClient
    from proxy.decisionstore import DecisionStore

    settings = env.settings.model_copy(update={"control_plane_port": free_port(), "control_token": SecretStr(TOKEN)})
    board = DecisionBoard()
    board.apply([_decision("203.0.113.1", 4.0), _decision("203.0.113.2", 120.0)])
    server = ControlPlaneService(settings, board=board)
    server.start()
    store = DecisionStore()
    client = ControlPlaneClient(store, server.url, TOKEN, watch_timeout_s=1.0, max_backoff_s=0.5)
    task = asyncio.create_task(client.run())
    counts: dict[str, float] = {}
    try:
        counts["received"] = await _until(lambda: len(store.all_active()), 2, 10.0)
        server.stop(2.0)
        await asyncio.sleep(1.5)
        counts["kept_while_down"] = len(store.all_active())
        await asyncio.sleep(max(0.0, 4.5 - 1.5))
        store.purge()
        counts["after_short_expiry"] = len(store.all_active())
        counts["short_dropped"] = float(not store.active(Scope.CLIENT, "203.0.113.1"))
        board.apply([_decision("203.0.113.3", 120.0)])
        restarted = ControlPlaneService(settings, board=board)
        restarted.start()
        try:
            counts["after_restart"] = await _until(lambda: len(store.all_active()), 2, 15.0, exact=True,
                                                   also=lambda: bool(store.active(Scope.CLIENT, "203.0.113.3")))
        finally:
            restarted.stop(2.0)
        counts["client_failures"] = client.failures
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    result.counts = counts
    result.ok = (counts["received"] == 2 and counts["kept_while_down"] == 2 and counts["after_short_expiry"] == 1
                 and counts["short_dropped"] == 1 and counts["after_restart"] == 2)
    result.verdict = PASS if result.ok else FAIL
    return result


async def _until(value: Callable[[], int], want: int, timeout_s: float, exact: bool = False,
                 also: Callable[[], bool] = lambda: True) -> float:
    """Poll `value()` until it reaches `want` (and `also()` holds); returns the last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = value()
        if (current == want if exact else current >= want) and also():
            return float(current)
        await asyncio.sleep(0.1)
    return float(value())


def gateway_overload(env: CaseEnv, scale: Scale) -> CaseResult:
    from tests.faults.overload import gateway_overload as run

    return run(env.settings, scale)


EnvCase = Callable[[CaseEnv, Scale], CaseResult]


def fuzz(name: str, what: str, strategy: Any, target: Callable[[Any], object]) -> EnvCase:
    """A hypothesis campaign of `scale.examples` cases as a reliability case."""

    def case(env: CaseEnv, scale: Scale) -> CaseResult:
        from hypothesis import HealthCheck, given, settings

        result = CaseResult(name, f"{scale.examples} generated {what}", "no crash, no hang, invariants hold")
        tried = [0]

        @settings(max_examples=scale.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def campaign(example: Any) -> None:
            tried[0] += 1
            target(example)

        try:
            campaign()
            result.ok, result.verdict = True, PASS
        except Exception as exc:  # the shrunk failing example: a finding, reported in the row
            result.detail = f"{type(exc).__name__}: {str(exc)[:500]}"
        result.counts = {"cases": float(tried[0]), "failures": 0.0 if result.ok else 1.0}
        return result

    return case


def _fuzz_cases() -> dict[str, Callable[[CaseEnv, Scale], CaseResult]]:
    from tests.faults.fuzz_http import HttpFuzzer, http_pieces
    from tests.faults.fuzz_otlp import CollectorFuzzer, collector_bodies, pipeline_decode, span_log_messages

    http, collector = HttpFuzzer(), CollectorFuzzer()
    return {
        "fuzz_proxy_http": fuzz("fuzz_proxy_http", "HTTP/1.1 request streams into the proxy listener",
                                http_pieces(), http.run),
        "fuzz_collector_otlp": fuzz("fuzz_collector_otlp",
                                    "OTLP bodies (protobuf/JSON; gzip, deflate, zstd, lz4, snappy; mutated)",
                                    collector_bodies(), lambda case: collector.run(*case)),
        "fuzz_pipeline_decode": fuzz("fuzz_pipeline_decode", "span-log messages (valid, mutated, noise)",
                                     span_log_messages(), pipeline_decode),
    }


SECURITY_TESTS = ("tests/test_security_auth.py", "tests/test_security_smuggling.py",
                  "tests/test_security_defaults.py")


def security_checks(env: CaseEnv, scale: Scale) -> CaseResult:
    """The security test files, run by pytest in a child process; counts from its JUnit report."""
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    from tests.faults.faults import ROOT

    result = CaseResult("security_checks", "pytest " + " ".join(SECURITY_TESTS),
                        "JWT attacks 401, smuggling refused, tokens 401, secrets not logged, loopback defaults")
    report = env.workdir / "security.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", *SECURITY_TESTS, "-q", "-p", "no:cacheprovider",
                          f"--junitxml={report}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    result.counts = {"checks": float(tests), "failed": float(failed)}
    result.ok = run.returncode == 0 and tests > 0 and failed == 0
    result.verdict = PASS if result.ok else FAIL
    if not result.ok:
        result.detail = run.stdout[-2000:]
    return result


def more_cases() -> dict[str, Callable[[CaseEnv, Scale], CaseResult]]:
    """Every non-delivery case by name."""
    return {"control_plane_down": control_plane_down, "gateway_overload": gateway_overload,
            **_fuzz_cases(), "security_checks": security_checks}
