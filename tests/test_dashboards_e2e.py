"""Every dashboard panel's query against a store filled by a simulated scenario, and the HTML report
opened in headless Chromium (console errors, data in every panel, a screenshot kept as artifact)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboards import spec
from dashboards.macros import TimeRange
from dashboards.model import load_dashboards
from dashboards.report import render_report, run_all
from gatewatch.settings import Settings
from gatewatch.store import connect
from tests.conftest import STORE_DSN
from tests.test_dashboards_scenario import fill_store

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any, TimeRange]]:
    """One store database with the scenario in it, shared by this module's tests."""
    from pipelines.migrate import migrate

    settings = Settings(clickhouse=STORE_DSN, database=f"gw_dash_{uuid.uuid4().hex[:8]}",
                        data_dir=tmp_path_factory.mktemp("dash"))
    client = connect(STORE_DSN)
    migrate(client, settings)
    window = fill_store(client, settings)
    yield settings, client, TimeRange(window.start - timedelta(minutes=1), window.end + timedelta(minutes=1))
    client.command(f"DROP DATABASE IF EXISTS {settings.database}")


def test_every_panel_query_returns_the_columns_its_panel_expects(filled):
    settings, client, time_range = filled
    runs = run_all(client, settings.database, time_range)
    assert {run.dashboard.uid for run in runs} == {d.uid for d in spec.DASHBOARDS}
    checked = 0
    for run in runs:
        assert not run.errors, (run.dashboard.uid, run.errors)
        assert len(run.marks) == len(run.dashboard.annotations)
        for result in run.panels:
            where = f"{run.dashboard.uid} / {result.panel.title}"
            assert "$" not in result.sql, f"{where}: unexpanded macro in {result.sql}"
            assert not result.error, f"{where}: {result.error}"
            assert result.frame is not None and result.frame.rows, f"{where}: no rows"
            expected = spec.find_panel(run.dashboard.uid, result.panel.title).columns
            assert result.frame.columns == expected, where
            if result.panel.type == "timeseries":
                assert result.frame.types[0].startswith("DateTime"), f"{where}: first column must be the time"
            checked += 1
    assert checked == sum(len(d.panels) for d in spec.DASHBOARDS)


def test_variables_filter_panels(filled):
    settings, client, time_range = filled
    traffic = next(d for d in load_dashboards() if d.uid == "gatewatch-traffic")
    [run] = run_all(client, settings.database, time_range, {"route": ["/api/login"]}, [traffic])
    routes = next(r for r in run.panels if r.panel.title == "Routes").frame
    assert routes is not None and routes.column("route") == ["/api/login"]
    assert run.context.variables["route"].values == ("/api/login",)


def test_committed_dashboard_json_is_up_to_date():
    from dashboards.build import main

    assert main(["--check"]) == 0, "run: python -m dashboards.build"


def _devtools(port_line: str) -> str:
    match = re.search(r"ws://[^\s]+", port_line)
    assert match, port_line
    return match.group(0)


class Chromium:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    events: list[dict[str, Any]]  # DevTools messages that were not a call's answer, oldest first

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM, "chromium is not installed (make debian-deps)"
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--window-size=1400,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.stderr is not None
        for _ in range(200):
            line = self.proc.stderr.readline()
            if "DevTools listening on" in line or not line:
                break
        browser_ws = _devtools(line)
        port = re.search(r":(\d+)/", browser_ws).group(1)  # type: ignore[union-attr]
        import httpx

        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"]
        from websockets.sync.client import connect as ws_connect

        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(ws_connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=20))
        self.next_id, self.events = 0, []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            self.events.append(message)
            if message.get("method") == method:
                return

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(str(params.get("exceptionDetails", {}).get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(json.dumps(params.get("args")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(params["entry"].get("text", ""))
        return errors

    def open(self, url: str) -> None:
        """Load a page with the console and log domains on, so no message is missed."""
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(domain)
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def close(self) -> None:
        self.stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_report_opens_in_chromium_without_errors_and_every_panel_draws(filled, tmp_path):
    settings, client, time_range = filled
    report = render_report(settings, client, tmp_path / "report.html", time_range)
    assert "http://" not in report.read_text() and "https://" not in report.read_text(), "page must be offline"
    browser = Chromium(tmp_path / "chromium")
    try:
        browser.open(report.as_uri())
        panels = browser.call(
            "Runtime.evaluate", returnByValue=True,
            expression="[...document.querySelectorAll('.panel')].map(p => ({id: p.dataset.panel, "
                       "drawn: +p.dataset.drawn, error: p.dataset.error, marks: p.querySelectorAll("
                       "'polyline, circle, rect, tbody tr, .stat').length}))",
        )["result"]["value"]
        # The legend toggles a series, as in Grafana (and runs the page's JS under the console check).
        browser.call("Runtime.evaluate", expression="document.querySelector('.legend li').click()")
        shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "dashboards-report.png").write_bytes(base64.b64decode(shot["data"]))
        assert browser.console_errors() == []
    finally:
        browser.close()
    assert len(panels) == sum(len(d.panels) for d in spec.DASHBOARDS)
    for panel in panels:
        assert panel["error"] == "0" and panel["drawn"] > 0 and panel["marks"] > 0, panel


def test_console_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><body><script>console.error('boom'); undefinedCall();</script></body>")
    browser = Chromium(tmp_path / "chromium")
    try:
        browser.open(page.as_uri())
        browser.call("Runtime.evaluate", expression="1")
        errors = browser.console_errors()
    finally:
        browser.close()
    assert any("boom" in e for e in errors) and any("undefinedCall" in e or "Uncaught" in e for e in errors), errors
