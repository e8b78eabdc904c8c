"""The shape every long-running stage shares, so one process can host several (embedded mode)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    """A stage that runs in the background of the process that started it.

    One whose background work can die exposes that as an `error` attribute (None while it runs).
    """

    name: str

    def start(self) -> None:
        """Begin serving; returns once ready, or raises GatewatchError if it cannot start."""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting work, finish or hand back what is in flight, release resources."""


def run_until_signal(services: Sequence[Service]) -> list[str]:
    """Start services in order, block until SIGINT/SIGTERM or a service fails, stop them in reverse.

    Returns the names of the services that failed (empty when a signal ended the run).
    """
    stop = threading.Event()
    failed: list[str] = []
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    started: list[Service] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        while not stop.wait(0.5):
            failed = [service.name for service in started if failure(service) is not None]
            if failed:
                # A process that stays up with a dead stage looks healthy to its supervisor; exiting
                # lets it restart the stage (compose: restart unless-stopped).
                log.error("%s stopped on an error; shutting down", ", ".join(failed))
                break
    finally:
        for service in reversed(started):
            service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return failed


def failure(service: Service) -> BaseException | None:
    """What the service's background work died of, or None (also for services that never report it)."""
    error: BaseException | None = getattr(service, "error", None)
    return error
