"""`gatewatch dashboards render|serve`: the command line, the HTTP server and their bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dashboards.serve import ReportServer


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gatewatch", *args], capture_output=True, text=True, timeout=180)


def test_render_writes_a_page_for_a_fresh_store(tmp_path: Path):
    migrated = run_cli("db", "migrate", "--data-dir", str(tmp_path))
    assert migrated.returncode == 0, migrated.stderr
    out = tmp_path / "out" / "report.html"
    done = run_cli("dashboards", "render", "-o", str(out), "--data-dir", str(tmp_path), "--minutes", "30",
                   "--var", "route=/api/login")
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "gatewatch / Traffic" in page
    assert 'data-error="1"' not in page


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--var", "novalue"], "use NAME=VALUE"),
        (["--minutes", "0"], "--minutes"),
        (["--end", "yesterday"], "ISO 8601"),
    ],
)
def test_render_bad_input_is_one_line(tmp_path: Path, args: list[str], needle: str):
    done = run_cli("dashboards", "render", "-o", str(tmp_path / "r.html"), "--data-dir", str(tmp_path), *args)
    assert done.returncode == 2
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_serve_answers_pages_health_and_bad_requests(settings, store):
    server = ReportServer(settings.model_copy(update={"host": "127.0.0.1"}), store, port=0)
    server.start()
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=30).text == "ok\n"
        page = httpx.get(f"{server.url}/?minutes=15&route=/api/x", timeout=60)
        assert page.status_code == 200 and "gatewatch / Service edges" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        sneaky = httpx.get(f"{server.url}/?database=system&gateway_service=x%27%20OR%201%3D1", timeout=60).text
        assert f"{settings.database}.otel_traces" in sneaky and "system.otel_traces" not in sneaky
        assert "ServiceName = &#x27;gateway&#x27;" in sneaky  # constants are not user input
        assert httpx.get(f"{server.url}/?minutes=-5", timeout=30).status_code == 400
        assert httpx.get(f"{server.url}/?minutes=abc", timeout=30).status_code == 400
        assert httpx.get(f"{server.url}/etc/passwd", timeout=30).status_code == 404
    finally:
        server.stop()

