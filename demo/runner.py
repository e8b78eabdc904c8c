"""`gatewatch demo`: core + data plane + simulator, live progress, and a summary read from the store."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.live import Live as RichLive

from demo.core import CoreService
from demo.dataplane import DataPlane
from demo.display import Live, progress, summary_tables
from demo.groundtruth import StoreSink
from demo.scenario import Scenario
from demo.simulator import Simulator
from demo.stack import Stack
from demo.summary import Summary, SummaryReader, Window, live_counts
from demo.topology import GATEWAY_SERVICE
from gatewatch.errors import GatewatchError
from gatewatch.loopthread import LoopThread
from gatewatch.settings import Settings

# The demo lasts two minutes, so the detectors look at shorter windows than in production: the bot
# model bootstraps on the first 30 s window, edges are judged on 20 s.
DEMO_DETECTORS: dict[str, object] = {
    "interval_s": 3.0, "client_window_s": 30, "min_client_requests": 8, "edge_current_s": 20,
    "decision_ttl_s": 30.0,
}
EPHEMERAL_PORTS = ("collector_http_port", "collector_grpc_port", "pipeline_metrics_port", "gateway_port",
                   "gateway_admin_port", "control_plane_port")


def demo_settings(settings: Settings, ephemeral: bool = True) -> Settings:
    """The demo's settings: free ports (nothing clashes with a running stack) and a control token."""
    update: dict[str, object] = {name: 0 for name in EPHEMERAL_PORTS} if ephemeral else {}
    if not settings.control_token.get_secret_value():
        update["control_token"] = SecretStr(secrets.token_urlsafe(24))
    return settings.model_copy(update=update)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo like Ctrl-C does: every `finally` runs and every service stops."""
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class DemoResult:
    """What a run produced."""

    summary: Summary
    run_id: str
    gateway_url: str


class DemoRun:
    """One demo run; `run()` returns the summary and leaves nothing running."""

    def __init__(self, settings: Settings, scenario: Scenario, console: Console | None = None,
                 report: Path | None = None) -> None:
        self.settings = demo_settings(settings)
        self.scenario = scenario
        self.console = console or Console()
        self.report = report
        self.run_id = f"{scenario.name}-{uuid.uuid4().hex[:8]}"
        self.live = Live(scenario.name, scenario.duration_s + scenario.drain_s)

    def run(self) -> DemoResult:
        """Start everything, drive the scenario, read the summary, stop everything."""
        stack = Stack()
        loop: LoopThread | None = None
        with sigterm_as_interrupt():
            try:
                core = CoreService(self.settings, detector_overrides=DEMO_DETECTORS)
                self._phase("starting core")
                stack.start(core)
                plane = DataPlane(self.settings, self.settings.data_dir / "demo", self.scenario.seed, core.core)
                self._phase("starting proxies")
                stack.start(plane)
                missing = core.core.missing + plane.missing
                if not plane.gateway_url:
                    raise GatewatchError(
                        "the demo needs the gateway (proxy.gateway.GatewayService), which is not available; "
                        f"missing: {', '.join(missing)}"
                    )
                loop = LoopThread("demo-simulator")
                loop.start()
                sink = StoreSink(core.store, self.settings.database)
                sim = Simulator(self.scenario, plane.gateway_url, plane.shop, sink, self.run_id, plane.shop.users)
                start_ms = int(time.time() * 1000)
                self._drive(loop, sim, core, start_ms)
                end_ms = int(time.time() * 1000)
                summary = SummaryReader(core.store, self.settings.database, GATEWAY_SERVICE).read(
                    Window(self.run_id, start_ms, end_ms)
                )
                summary.notes += [f"not available yet: {name}" for name in missing]
                summary.report_path = self._render_report(summary, core.store)
                return DemoResult(summary, self.run_id, plane.gateway_url)
            finally:
                self._phase("stopping")
                if loop is not None:
                    loop.stop(drain_s=5.0)
                stack.stop()

    def _phase(self, phase: str) -> None:
        self.live.phase = phase
        self.console.log(f"[cyan]{phase}[/]")

    def _drive(self, loop: LoopThread, sim: Simulator, core: CoreService, start_ms: int) -> None:
        """Run the simulator, then drain, refreshing the live panel; bounded by the scenario."""
        assert loop.loop is not None, "started above"
        future = asyncio.run_coroutine_threadsafe(sim.run(), loop.loop)
        started = time.monotonic()
        total = self.scenario.duration_s + self.scenario.drain_s
        next_count = 0.0
        self.live.phase = "traffic"
        with RichLive(progress(self.live, sim.stats), console=self.console, refresh_per_second=4,
                      transient=False) as panel:
            while True:
                elapsed = time.monotonic() - started
                if future.done() and self.live.phase == "traffic":
                    future.result()  # surface a simulator crash
                    self.live.phase = "draining"
                if elapsed >= total and future.done():
                    break
                if elapsed > total + 30:
                    raise GatewatchError("the simulator did not finish in time")
                if elapsed >= next_count:
                    self.live.spans, self.live.decisions, self.live.alerts = live_counts(
                        core.store, self.settings.database, start_ms
                    )
                    next_count = elapsed + 2.0
                self.live.elapsed_s = elapsed
                self.live.events = sim.events
                panel.update(progress(self.live, sim.stats))
                time.sleep(0.25)

    def _render_report(self, summary: Summary, store: Any) -> str:
        """Render every dashboard over the run's window to one HTML file; its path ('' if that failed)."""
        from datetime import UTC, datetime

        from dashboards.macros import TimeRange
        from dashboards.report import render_report

        path = self.report or self.settings.data_dir / "demo" / "report.html"
        start = datetime.fromtimestamp(summary.window.start_ms / 1000 - 30, UTC)
        end = datetime.fromtimestamp(summary.window.end_ms / 1000 + 5, UTC)
        try:
            return str(render_report(self.settings, store, path, TimeRange(start, end)).resolve())
        except (GatewatchError, OSError) as exc:  # the summary still stands without the report
            summary.notes.append(f"report not rendered: {exc}")
            return ""


def print_summary(console: Console, result: DemoResult) -> None:
    """The closing tables."""
    console.rule(f"gatewatch demo summary · run {result.run_id}")
    for renderable in summary_tables(result.summary):
        console.print(renderable)
