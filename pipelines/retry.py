"""Retry with capped exponential backoff until success, or until a stopping pipeline's deadline."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from gatewatch.store import first_line

T = TypeVar("T")
log = logging.getLogger(__name__)


class Abandoned(Exception):
    """The pipeline is stopping and the store did not come back before its deadline."""


class Backoff:
    """Retries a store call; `abandon` is set (with a deadline) when the pipeline must stop."""

    def __init__(self, initial_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.initial_s, self.cap_s = initial_s, cap_s
        self.abandon = threading.Event()
        self.deadline = float("inf")

    def run(self, what: str, call: Callable[[], T], on_error: Callable[[], None] | None = None) -> T:
        """`call()` until it returns; raises Abandoned only once stopping and past the deadline."""
        delay = self.initial_s
        while True:
            try:
                return call()
            except Exception as exc:  # store errors of any kind: never lose the batch, retry it
                if on_error:
                    on_error()
                if self.abandon.is_set() and time.monotonic() >= self.deadline:
                    raise Abandoned(f"{what}: {first_line(exc)}") from exc
                log.warning("%s failed (%s); retrying in %.1fs", what, first_line(exc), delay)
                pause = min(delay, max(0.0, self.deadline - time.monotonic()))
                if self.abandon.is_set():
                    time.sleep(pause)  # stopping: keep trying until the deadline, at the same pace
                else:
                    self.abandon.wait(pause)
                delay = min(self.cap_s, delay * 2) * random.uniform(0.8, 1.2)
