"""`gatewatch sidecar` as a process: serves with the YAML config, follows a decisions file, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from gatewatch.decisions import Decision, DecisionKind, Reason, Scope, Target
from tests.test_sidecar_support import free_port, running_backend, wait_listening

pytestmark = pytest.mark.timeout(90)


def test_sidecar_command_serves_follows_decisions_file_and_stops(tmp_path: Path) -> None:
    inbound, outbound = free_port(), free_port()
    decisions = tmp_path / "decisions.json"
    with running_backend() as payment:
        config = tmp_path / "sidecar.yaml"
        config.write_text(
            f"inbound: {{port: {inbound}, forward_to: '127.0.0.1:{payment.port}'}}\n"
            f"outbound: {{port: {outbound}}}\ntls: {{enabled: false}}\ntracing: {{enabled: false}}\n"
            f"decisions_file: decisions.json\n"
            f"services:\n  payment: {{endpoints: ['127.0.0.1:{payment.port}']}}\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "gatewatch", "sidecar", "--service", "checkout", "--config", str(config),
             "--data-dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            wait_listening(outbound, process)
            assert httpx.get(f"http://127.0.0.1:{outbound}/", headers={"host": "payment"}).status_code == 200
            assert httpx.get(f"http://127.0.0.1:{inbound}/").status_code == 200
            decision = Decision.new(DecisionKind.CIRCUIT_OPEN, Target(scope=Scope.EDGE, key="checkout->payment"),
                                    Reason(detector="failure_spike"), ttl=timedelta(seconds=60))
            decisions.write_text(json.dumps([json.loads(decision.to_json())]))
            deadline = time.monotonic() + 10
            while httpx.get(f"http://127.0.0.1:{outbound}/", headers={"host": "payment"}).status_code != 503:
                assert time.monotonic() < deadline, "decisions file never applied"
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
