"""Start services in order and stop them in reverse, whatever happens in between."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gatewatch.service import Service

log = logging.getLogger(__name__)


class Stack:
    """The services this process started; `stop()` stops each once, newest first."""

    def __init__(self) -> None:
        self.started: list[Service] = []

    def start(self, service: Service) -> None:
        """Start one service and remember it (not remembered if start raised)."""
        service.start()
        self.started.append(service)

    def start_all(self, services: Sequence[Service]) -> None:
        """Start several in order."""
        for service in services:
            self.start(service)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every started service in reverse order; one failing stop does not skip the others."""
        while self.started:
            service = self.started.pop()
            try:
                service.stop(timeout_s)
            except Exception:  # keep stopping the rest; say which one failed
                log.exception("stopping %s failed", getattr(service, "name", service))
