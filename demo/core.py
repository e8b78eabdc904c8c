"""The core: collector, pipeline, detectors and control plane in THIS process.

chDB and the embedded span log are per-process, so the stages that share them run together here
(with Kafka the span log is external, but the store still is one chDB engine per process).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

from demo.stack import Stack
from gatewatch.service import Service, failure
from gatewatch.settings import Settings
from gatewatch.spanlog import SpanLog, open_span_log


def component(module: str, name: str, missing: list[str]) -> Any:
    """A stage's class, or None (noted in `missing`) while that stage has not landed."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        missing.append(f"{module}.{name}")
        return None


@dataclass
class Core:
    """The started core stages and the endpoints the data plane needs from them."""

    settings: Settings
    services: list[Service] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    collector_endpoint: str = ""
    control_plane_url: str = ""


class CoreService:
    """Starts the core stages in dependency order; a `gatewatch.service.Service` itself."""

    name = "core"

    def __init__(
        self, settings: Settings, span_log: SpanLog | None = None, detector_overrides: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.detector_overrides = detector_overrides or {}
        self.span_log = span_log or open_span_log(settings)
        self.core = Core(settings)
        self._stack = Stack()

    def start(self) -> None:
        """Migrate the store, then start collector, pipeline, control plane and detectors."""
        from gatewatch.store import open_store
        from pipelines.migrate import migrate

        settings = self.settings
        self.store = open_store(settings)
        migrate(self.store, settings)
        try:
            self._start_collector()
            self._start_pipeline()
            self._start_detectors()
        except BaseException:
            self.stop(2.0)
            raise

    @property
    def error(self) -> BaseException | None:
        """What the first failed inner stage died of (see `gatewatch.service.failure`)."""
        return next((e for e in map(failure, self.core.services) if e is not None), None)

    def _run(self, service: Service) -> Service:
        self._stack.start(service)
        self.core.services.append(service)
        return service

    def _start_collector(self) -> None:
        cls = component("collector.service", "CollectorService", self.core.missing)
        if cls is not None:
            collector = self._run(cls(self.settings, span_log=self.span_log))
            self.core.collector_endpoint = str(collector.http_endpoint)  # type: ignore[attr-defined]

    def _start_pipeline(self) -> None:
        cls = component("pipelines.service", "PipelineService", self.core.missing)
        if cls is not None:
            self._run(cls(self.settings, span_log=self.span_log, store=self.store))

    def _start_detectors(self) -> None:
        plane_cls = component("detectors.controlplane", "ControlPlaneService", self.core.missing)
        detect_cls = component("detectors.service", "DetectorService", self.core.missing)
        if plane_cls is not None:
            plane = self._run(plane_cls(self.settings))
            self.core.control_plane_url = str(getattr(plane, "url", ""))
        if detect_cls is not None:
            self._run(detect_cls(self.settings, store=self.store, config=self._detector_config()))

    def _detector_config(self) -> Any:
        """The detectors' config with this run's overrides; GATEWATCH_DETECTORS_* set by the user still win."""
        from detectors.config import DetectorConfig

        given = {
            k: v for k, v in self.detector_overrides.items() if f"GATEWATCH_DETECTORS_{k.upper()}" not in os.environ
        }
        return DetectorConfig(**given)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop what started, newest first (detectors before the pipeline before the collector)."""
        self._stack.stop(timeout_s)
        self.core.services.clear()
