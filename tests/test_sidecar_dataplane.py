"""The sidecar's data plane without pydantic: the plan handed to it, what it imports, the process
`gatewatch sidecar` execs, and the pydantic-free decision parser it reads decisions with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gatewatch.decisions import Decision, DecisionKind, Mode, Reason, Scope, Target
from gatewatch.decisionwire import parse_wire_decision, parse_wire_snapshot
from gatewatch.errors import ConfigError
from gatewatch.settings import Settings
from proxy.breaker import BreakerConfig
from proxy.controlplane import parse_decisions_file
from proxy.retry import RetryConfig
from proxy.sidecar_config import parse_sidecar_config
from proxy.sidecar_plan import SidecarPlan
from tests.test_sidecar_support import free_port, make_pki, wait_listening

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent


def _config(pki: Path) -> dict[str, Any]:
    return {
        "service": "checkout",
        "inbound": {"port": 15006, "forward_to": "127.0.0.1:8000", "allow": ["gateway"],
                    "limits": {"max_inflight": 5}},
        "tls": {"enabled": True, "ca": str(pki / "ca.pem"), "cert": str(pki / "checkout.pem"),
                "key": str(pki / "checkout.key")},
        "services": {"payment": {"endpoints": ["127.0.0.1:15016"], "retry": {"max_retries": "1", "methods": ["post"]},
                                 "breaker": {"consecutive_failures": 3}}},
        "retry": {"deadline_s": 4},
        "decisions_file": "/tmp/decisions.json",
    }


def test_plan_resolves_the_config_and_round_trips_through_json(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "checkout")
    settings = Settings(control_plane_url="http://127.0.0.1:8700", control_token="tok-secret", sidecar_admin_port=0)
    plan = parse_sidecar_config(_config(pki)).plan(settings)
    payment = plan.services["payment"]
    assert payment.retry.max_retries == 1 and payment.retry.deadline_s == 4  # override + defaults
    assert payment.retry.methods == frozenset({"POST"}) and payment.breaker.consecutive_failures == 3
    assert plan.inbound.limits.max_inflight == 5 and plan.allow == ("gateway",) and plan.tls is not None
    assert plan.control_token == "tok-secret" and "tok-secret" not in repr(plan)
    assert SidecarPlan.from_json(plan.to_json()) == plan


def test_policy_dataclasses_check_their_bounds_without_pydantic() -> None:
    with pytest.raises(ValueError, match=r"jitter must be < 1\.0"):
        BreakerConfig(jitter=1.0)
    with pytest.raises(ValueError, match=r"max_retries must be <= 10"):
        RetryConfig(max_retries=11)
    with pytest.raises(ConfigError, match=r"services\.payment\.retry: Value error, max_retries: Input should"):
        parse_sidecar_config({**_config(Path("/x")), "tls": {"enabled": False},
                              "services": {"payment": {"endpoints": ["127.0.0.1:1"], "retry": {"max_retries": -1}}}})


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


def _output_after_promlite(code: str) -> str:
    """stdout of `code` run in a fresh interpreter after `promlite.install()` (which must succeed)."""
    result = _python("import sys\nfrom proxy import promlite\nassert promlite.install()\n" + code)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_data_plane_imports_neither_pydantic_nor_yaml_nor_http_clients_nor_email_nor_otel() -> None:
    assert _output_after_promlite(
        "import proxy.sidecar_main, proxy.sidecar, proxy.controlplane, gatewatch.service\n"
        "heavy = [m for m in ('pydantic', 'yaml', 'httpx', 'gatewatch.settings', 'prometheus_client.exposition',"
        " 'http.client', 'email', 'opentelemetry', 'uuid', 'gzip') if m in sys.modules]\nprint(heavy)\n"
    ) == "[]"


def test_scraping_the_sidecar_admin_imports_no_http_server_or_email() -> None:
    assert _output_after_promlite(
        "import asyncio\nfrom prometheus_client import CollectorRegistry\n"
        "from proxy.admin import admin_handler\nfrom proxy.policy import Exchange, Headers, Request\n"
        "from proxy.sidecar_metrics import SidecarMetrics\n"
        "metrics = SidecarMetrics(CollectorRegistry()); metrics.count(metrics.requests, 'in', '', '200')\n"
        "handle = admin_handler(metrics.registry, dict, openmetrics=True)\n"
        "response = asyncio.run(handle(Exchange(Request('GET', '/metrics', '', Headers([])), '127.0.0.1')))\n"
        "assert b'gatewatch_sidecar_requests_total{' in response.body and response.body.endswith(b'# EOF\\n')\n"
        "print([m for m in ('http.server', 'wsgiref', 'urllib.request', 'email', 'prometheus_client.exposition')"
        " if m in sys.modules])\n"
    ) == "[]"


@pytest.mark.parametrize("seconds", [0, 784111777, 951782400, 1798761599, 4102444800])
def test_date_header_is_what_email_utils_writes(seconds: int) -> None:
    from email.utils import formatdate

    from proxy.server import http_date

    assert http_date(seconds) == formatdate(seconds, usegmt=True)


def test_promlite_names_load_lazily_and_anything_else_runs_the_real_package() -> None:
    assert _output_after_promlite(
        "from prometheus_client import CollectorRegistry, Counter\n"
        "registry = CollectorRegistry(); Counter('x', 'x', registry=registry).inc()\n"
        "assert 'prometheus_client.exposition' not in sys.modules\n"
        "from prometheus_client import generate_latest, start_http_server\n"
        "assert b'x_total 1.0' in generate_latest(registry)\n"
        "assert not promlite.install()\nprint('ok')\n"
    ) == "ok"


def test_gatewatch_sidecar_runs_the_data_plane_with_the_token_off_its_command_line(tmp_path: Path) -> None:
    inbound, outbound = free_port(), free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(f"inbound: {{port: {inbound}, forward_to: '127.0.0.1:1'}}\noutbound: {{port: {outbound}}}\n"
                      "tls: {enabled: false}\ntracing: {enabled: false}\n")
    env = {**os.environ, "GATEWATCH_CONTROL_PLANE_URL": f"http://127.0.0.1:{free_port()}",
           "GATEWATCH_CONTROL_TOKEN": "tok-secret-42"}
    env.pop("GATEWATCH_COMPILED", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gatewatch", "sidecar", "--service", "checkout", "--config", str(config),
         "--data-dir", str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_listening(outbound, process)
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        maps = Path(f"/proc/{process.pid}/maps").read_text()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert b"proxy.sidecar_main" in command and not any(b"tok-secret-42" in part for part in command)
    assert "pydantic_core" not in maps  # the validating interpreter is gone: exec'd, not forked
    assert "_compiled" not in maps  # plain Python by default: the compiled build costs RSS (Sidecar → Memory)
    assert process.returncode == 0
    assert b"tok-secret-42" not in stderr and b"control plane unreachable" in stderr


def _decision(**changes: Any) -> dict[str, Any]:
    decision = Decision.new(DecisionKind.RATE_LIMIT, Target(scope=Scope.CLIENT, key="203.0.113.7"),
                            Reason(detector="bot", score=0.9, top_features={"rate": 3.0}), ttl=timedelta(minutes=5),
                            params={"rate_per_s": 2.0}, mode=Mode.DRY_RUN)
    return {**json.loads(decision.to_json()), **changes}


def test_wire_decisions_parse_what_the_models_write() -> None:
    raw = _decision()
    parsed = parse_wire_decision(raw)
    model = Decision.model_validate(raw)
    assert parsed.kind is DecisionKind.RATE_LIMIT and parsed.mode is Mode.DRY_RUN
    assert (parsed.id, parsed.target.scope, parsed.target.key, parsed.params) == (
        model.id, model.target.scope, model.target.key, model.params)
    assert (parsed.reason.detector, parsed.reason.top_features) == ("bot", {"rate": 3.0})
    assert parsed.expires_at == model.expires_at and parsed.created_at == model.created_at
    minimal = parse_wire_decision({"kind": "block", "target": {"scope": "client", "key": "a"},
                                   "reason": {"detector": "x"}, "expires_at": "2999-01-01T00:00:00Z"})
    assert minimal.mode is Mode.ENFORCE and minimal.id and minimal.expires_at.tzinfo is not None
    version, decisions = parse_wire_snapshot({"version": 3, "decisions": [raw]})
    assert version == 3 and decisions[0].id == model.id
    assert parse_decisions_file(json.dumps([raw]).encode())[0][0].id == model.id


@pytest.mark.parametrize(("changes", "error"), [
    ({"kind": "nuke"}, "kind: must be one of"),
    ({"surprise": 1}, "unknown field 'surprise'"),
    ({"target": {"scope": "client", "key": ""}}, "target.key"),
    ({"target": {"scope": "client", "key": "k" * 513}}, "target.key"),
    ({"expires_at": "2020-01-01T00:00:00"}, "expires_at: needs a timezone"),
    ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at must be after created_at"),
    ({"reason": {"score": 1}}, "reason: missing field 'detector'"),
    ({"params": []}, "params: must be a dict"),
])
def test_malformed_wire_decisions_are_rejected_with_the_field(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_wire_decision(_decision(**changes))


def test_malformed_snapshots_are_rejected() -> None:
    snapshots: list[object] = [{"version": -1}, {"version": True}, {"decisions": []}, [],
                               {"version": 1, "decisions": {}}]
    for snapshot in snapshots:
        with pytest.raises(ValueError):
            parse_wire_snapshot(snapshot)


def test_data_plane_without_a_readable_plan_says_so_in_one_line() -> None:
    result = _python("import sys\nfrom proxy.sidecar_main import main\nsys.exit(main(['--plan-fd', '987']))")
    assert result.returncode == 2 and "cannot read the sidecar plan from fd 987" in result.stderr
    assert "Traceback" not in result.stderr
