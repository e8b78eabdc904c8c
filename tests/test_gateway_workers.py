"""`gatewatch gateway` with several worker processes: one port, one rate limit across workers,
metrics of all workers, reload of all, a killed worker replaced, a clean stop, a fatal error."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from proxy.server import PROXY_FULL_COLLECTION_EVERY, collect_fully_seldom
from tests.test_gateway import upstreams  # noqa: F401  (fixture)
from tests.test_sidecar_support import free_port, wait_listening


@dataclass
class Workers:
    process: subprocess.Popen[bytes]
    config: Path
    port: int
    admin_port: int

    def health(self) -> list[dict[str, object]]:
        """/healthz over new connections until both workers answered (the kernel picks one per connection)."""
        seen: dict[object, dict[str, object]] = {}
        deadline = time.monotonic() + 15
        while len(seen) < 2 and time.monotonic() < deadline:
            with httpx.Client() as client:
                body = client.get(f"http://127.0.0.1:{self.admin_port}/healthz").json()
            seen[body["worker"]] = body
        assert len(seen) == 2, f"only workers {sorted(seen)} answered"  # type: ignore[type-var]
        return [seen[index] for index in sorted(seen)]  # type: ignore[type-var]


def _yaml(upstream: int, port: int, admin_port: int, routes: str = "") -> str:
    return f"""
listen_port: {port}
admin_port: {admin_port}
workers: 2
tracing: {{enabled: false}}
upstreams:
  app: {{endpoints: ["127.0.0.1:{upstream}"]}}
rate_limits:
  five: {{rate_per_s: 0.001, burst: 5, key: client}}
routes:
  - name: api
    match: {{prefix: /api}}
    upstream: app
    rate_limit: five
{routes}"""


@pytest.fixture
def workers(tmp_path: Path, upstreams: list[int]) -> Iterator[Workers]:  # noqa: F811
    port, admin_port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(_yaml(upstreams[0], port, admin_port))
    env = {**os.environ, "GATEWATCH_DATA_DIR": str(tmp_path / "data"), "GATEWATCH_CONTROL_PLANE_URL": ""}
    process = subprocess.Popen([sys.executable, "-m", "gatewatch", "gateway", "--config", str(config)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, process)
        wait_listening(admin_port, process)
        yield Workers(process, config, port, admin_port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_workers_share_the_port_the_rate_limit_and_the_metrics(workers: Workers) -> None:
    pids = {body["pid"] for body in workers.health()}
    assert len(pids) == 2
    statuses = []
    for _ in range(30):  # a new connection each time: the kernel spreads them over both workers
        with httpx.Client() as client:
            statuses.append(client.get(f"http://127.0.0.1:{workers.port}/api/x").status_code)
    assert statuses.count(200) == 5 and statuses.count(429) == 25  # one burst of 5 for the client, not 5 per worker
    expected = {'gatewatch_gateway_ratelimit_total{outcome="allowed"}': 5.0,
                'gatewatch_gateway_ratelimit_total{outcome="limited"}': 25.0}
    deadline = time.monotonic() + 10  # a worker's per-request counts reach the files once a second
    while (counts := _ratelimit_counts(workers.admin_port)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counts == expected


def _ratelimit_counts(admin_port: int) -> dict[str, float]:
    with httpx.Client() as client:
        metrics = client.get(f"http://127.0.0.1:{admin_port}/metrics").text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("gatewatch_gateway_ratelimit_total")}


def test_reload_reaches_every_worker_and_a_killed_worker_is_replaced(workers: Workers, upstreams: list[int]) -> None:  # noqa: F811
    before = workers.health()
    extra = "  - name: more\n    match: {prefix: /more}\n    upstream: app\n"
    workers.config.write_text(_yaml(upstreams[0], workers.port, workers.admin_port, extra))
    workers.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(body["routes"] != 2 for body in workers.health()):
        time.sleep(0.1)
    assert all(body["routes"] == 2 for body in workers.health())
    victim = int(before[0]["pid"])  # type: ignore[call-overload]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and victim in {body["pid"] for body in workers.health()}:
        time.sleep(0.1)
    after = workers.health()
    assert victim not in {body["pid"] for body in after} and {body["worker"] for body in after} == {0, 1}
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(20) == 0


def test_a_port_in_use_stops_every_worker_with_one_error(tmp_path: Path, upstreams: list[int]) -> None:  # noqa: F811
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # no SO_REUSEPORT: the workers cannot join this port
        config = tmp_path / "gateway.yaml"
        config.write_text(_yaml(upstreams[0], taken.getsockname()[1], free_port()))
        result = subprocess.run([sys.executable, "-m", "gatewatch", "gateway", "--config", str(config)],
                                env={**os.environ, "GATEWATCH_CONTROL_PLANE_URL": ""}, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 2
    assert "gateway cannot listen on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_several_workers_need_fixed_ports(tmp_path: Path, upstreams: list[int]) -> None:  # noqa: F811
    config = tmp_path / "gateway.yaml"
    config.write_text(_yaml(upstreams[0], 0, free_port()))
    result = subprocess.run([sys.executable, "-m", "gatewatch", "gateway", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "ports must be fixed" in result.stderr


@pytest.mark.parametrize(("in_file", "flag", "expected"), [
    ("auto", None, f"{min(64, len(os.sched_getaffinity(0)))} worker"),  # one per usable core, as nginx's auto
    ("2", "3", "3 workers"),  # the flag wins
    ("2", "auto", f"{min(64, len(os.sched_getaffinity(0)))} worker"),
    ("0", None, "gateway.yaml:4: workers: Value error, must be a number within 1..64 or auto (got 0)"),
    ("many", None, "gateway.yaml:4: workers: Value error, must be a number within 1..64 or auto (got 'many')"),
    ("2", "65", "workers must be within 1..64 or auto (got 65)"),
    ("2", "lots", "workers must be a number within 1..64 or auto (got 'lots')"),
])
def test_worker_counts_and_auto(tmp_path: Path, in_file: str, flag: str | None, expected: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(_yaml(1, free_port(), free_port()).replace("workers: 2", f"workers: {in_file}"))
    extra = ["--workers", flag] if flag is not None else []
    result = subprocess.run([sys.executable, "-m", "gatewatch", "gateway", "--config", str(config), "--check", *extra],
                            capture_output=True, text=True, timeout=60)
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.returncode == (0 if result.stdout else 2) and "Traceback" not in result.stderr


def test_a_gateway_process_collects_fully_seldom() -> None:
    """`gatewatch gateway` (each worker too) calls this before it serves: a full collection empties
    the interpreter's free lists, ~1 ms a pass, once a second at 20,000 requests/s by default."""
    before = gc.get_threshold()
    try:
        collect_fully_seldom()
        assert gc.get_threshold() == (before[0], before[1], PROXY_FULL_COLLECTION_EVERY)
    finally:
        gc.set_threshold(*before)
