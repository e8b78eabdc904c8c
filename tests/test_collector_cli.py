"""`gatewatch collector`: serves until SIGTERM then exits cleanly; a dead Kafka is one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.collector_helpers import make_request

ROOT = Path(__file__).resolve().parent.parent


def gatewatch(*args: str, **kwargs) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWATCH_KAFKA"}
    return subprocess.Popen([sys.executable, "-m", "gatewatch", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_collector_command_serves_then_stops_on_sigterm(tmp_path):
    process = gatewatch("collector", "--http-port", "0", "--grpc-port", "0", "--data-dir", str(tmp_path))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("OTLP/HTTP http://127.0.0.1:") and "OTLP/gRPC 127.0.0.1:" in line
        url = line.split()[1]
        response = httpx.post(url, content=make_request().SerializeToString(),
                              headers={"content-type": "application/x-protobuf"}, timeout=30)
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_collector_command_with_unreachable_kafka_fails_with_one_line():
    process = gatewatch("collector", "--kafka", "127.0.0.1:1", "--http-port", "0", "--grpc-port", "0")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip().splitlines()[-1].startswith("gatewatch: error: no Kafka broker accepts connections")
