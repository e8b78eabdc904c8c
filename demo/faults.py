"""Fault injection for a demo service: an error rate and/or added latency for a time window."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultSpec:
    """What to inject: the share of requests answered 503, and latency added to every request."""

    error_rate: float = 0.0
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if not 0.0 <= self.latency_s <= 30.0:
            raise ValueError("latency_s must be within [0, 30]")


class Fault:
    """The current fault of one service; thread-safe because the simulator sets it from another loop."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._spec = FaultSpec()
        self._until = 0.0
        self._rng = random.Random(seed)

    def inject(self, spec: FaultSpec, duration_s: float) -> None:
        """Apply `spec` for the next `duration_s` seconds (replacing any current fault)."""
        with self._lock:
            self._spec, self._until = spec, time.monotonic() + max(0.0, duration_s)

    def clear(self) -> None:
        """End the current fault now."""
        with self._lock:
            self._spec, self._until = FaultSpec(), 0.0

    def current(self) -> FaultSpec:
        """The fault in force now (the empty spec once its window has passed)."""
        with self._lock:
            return self._spec if time.monotonic() < self._until else FaultSpec()

    async def apply(self) -> bool:
        """Sleep the injected latency; True when this request must fail."""
        spec = self.current()
        if spec.latency_s:
            await asyncio.sleep(spec.latency_s)
        with self._lock:
            return spec.error_rate > 0 and self._rng.random() < spec.error_rate
