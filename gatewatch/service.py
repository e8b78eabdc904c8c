"""The shape every long-running stage shares, so one process can host several (embedded mode)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import Protocol


class Service(Protocol):
    """A stage that runs in the background of the process that started it."""

    name: str

    def start(self) -> None:
        """Begin serving; returns once ready, or raises GatewatchError if it cannot start."""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting work, finish or hand back what is in flight, release resources."""


def run_until_signal(services: Sequence[Service]) -> None:
    """Start services in order, block until SIGINT/SIGTERM, stop them in reverse order."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    started: list[Service] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        while not stop.wait(0.5):
            pass
    finally:
        for service in reversed(started):
            service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
