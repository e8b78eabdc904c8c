"""Circuit breakers: closed / open / half-open, per upstream service and per endpoint.

A breaker trips on `consecutive_failures` in a row (Linkerd's failure accrual, default 7) or on a
failure rate over a sliding window once `min_requests` were seen there (Envoy's outlier detection
shape). An open breaker fails fast; after a backoff (exponential, with jitter) it lets probes
through (half-open): a successful probe closes it, a failed one opens it again for longer.
A control-plane decision can force a state until it expires, whatever the counters say.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from annotated_types import Ge, Gt, Le, Lt

from proxy.bounds import check_bounds

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker trips and how it re-probes. A plain dataclass: pydantic validates it inside
    the sidecar config (same bounds), and the data plane builds it without importing pydantic."""

    __pydantic_config__: ClassVar[Any] = {"extra": "forbid"}

    consecutive_failures: Annotated[int, Ge(1)] = 7
    failure_rate: Annotated[float, Gt(0.0), Le(1.0)] = 0.5
    window_s: Annotated[float, Gt(0.0)] = 10.0
    min_requests: Annotated[int, Ge(1)] = 20
    base_open_s: Annotated[float, Gt(0.0)] = 1.0
    max_open_s: Annotated[float, Gt(0.0)] = 60.0
    jitter: Annotated[float, Ge(0.0), Lt(1.0)] = 0.2
    half_open_probes: Annotated[int, Ge(1)] = 1

    def __post_init__(self) -> None:
        check_bounds(self)

    def open_for(self, trips: int, rng: random.Random) -> float:
        """Seconds to stay open after the `trips`-th consecutive trip: doubling, capped, +/- jitter."""
        base = min(self.max_open_s, self.base_open_s * (2 ** max(0, trips - 1)))
        return base * (1.0 + rng.uniform(-self.jitter, self.jitter))


class SlidingWindow:
    """Request and failure counts over the last `window_s`, in ten buckets (O(1) per record)."""

    BUCKETS = 10

    def __init__(self, window_s: float, clock: Clock) -> None:
        self._width = window_s / self.BUCKETS
        self._clock = clock
        self._totals = [0] * self.BUCKETS
        self._failures = [0] * self.BUCKETS
        self._epochs = [-1] * self.BUCKETS

    def _slot(self) -> int:
        epoch = int(self._clock() / self._width)
        slot = epoch % self.BUCKETS
        if self._epochs[slot] != epoch:  # the bucket holds an older period: start it afresh
            self._epochs[slot] = epoch
            self._totals[slot] = self._failures[slot] = 0
        return slot

    def record(self, failed: bool) -> None:
        """Count one outcome now."""
        slot = self._slot()
        self._totals[slot] += 1
        self._failures[slot] += failed

    def counts(self) -> tuple[int, int]:
        """(requests, failures) within the window."""
        oldest = int(self._clock() / self._width) - self.BUCKETS + 1
        live = [i for i in range(self.BUCKETS) if self._epochs[i] >= oldest]
        return sum(self._totals[i] for i in live), sum(self._failures[i] for i in live)

    def clear(self) -> None:
        """Forget every outcome (after a state change)."""
        self._epochs = [-1] * self.BUCKETS


class CircuitBreaker:
    """One breaker. Call `allow()` before a request and `record(ok)` after it (not thread-safe:
    the proxy runs on one event loop)."""

    def __init__(
        self, name: str, config: BreakerConfig | None = None,
        clock: Clock = time.monotonic, rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self._state = BreakerState.CLOSED
        self._window = SlidingWindow(self.config.window_s, clock)
        self._consecutive = 0
        self._trips = 0  # consecutive trips without a close: drives the backoff
        self._reopen_at = 0.0
        self._probes = 0
        self._forced: BreakerState | None = None
        self._forced_until = 0.0

    @property
    def state(self) -> BreakerState:
        """The effective state now (a forced state wins until it expires)."""
        forced = self._forced_state()
        if forced is not None:
            return forced
        if self._state is BreakerState.OPEN and self._clock() >= self._reopen_at:
            self._state, self._probes = BreakerState.HALF_OPEN, 0
        return self._state

    @property
    def forced(self) -> bool:
        """True while a control-plane decision holds the state."""
        return self._forced_state() is not None

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self._forced_state() is BreakerState.OPEN:
            return max(0.0, self._forced_until - self._clock())
        return max(0.0, self._reopen_at - self._clock()) if self._state is BreakerState.OPEN else 0.0

    def allow(self) -> bool:
        """Whether a request may go through now; in half-open, admits a bounded number of probes."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self.forced:  # forced half-open is not a thing decisions express; treat as closed
            return True
        if self._probes >= self.config.half_open_probes:
            return False
        self._probes += 1
        return True

    def record(self, ok: bool) -> None:
        """The outcome of a request that `allow()` admitted."""
        if self._forced_state() is not None:
            return  # the decision owns the state; counting now would trip on stale data later
        if self._state is BreakerState.HALF_OPEN:
            self._close() if ok else self._open()
            return
        if self._state is BreakerState.OPEN:
            return  # a late answer from before the trip
        self._window.record(not ok)
        self._consecutive = 0 if ok else self._consecutive + 1
        if not ok and self._should_trip():
            self._open()

    def release(self) -> None:
        """An admitted request ended without an outcome (client gone): free its half-open probe slot."""
        if self._state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def force(self, state: BreakerState, until: float) -> None:
        """Hold `state` (OPEN or CLOSED) until the clock reaches `until` (control-plane decisions)."""
        self._forced, self._forced_until = state, until

    def unforce(self) -> None:
        """Drop a forced state early (the decision was withdrawn)."""
        self._forced = None

    def _forced_state(self) -> BreakerState | None:
        if self._forced is not None and self._clock() >= self._forced_until:
            self._forced = None
        return self._forced

    def _should_trip(self) -> bool:
        cfg = self.config
        if self._consecutive >= cfg.consecutive_failures:
            return True
        total, failures = self._window.counts()
        return total >= cfg.min_requests and failures / total >= cfg.failure_rate

    def _open(self) -> None:
        self._trips += 1
        self._state = BreakerState.OPEN
        self._reopen_at = self._clock() + self.config.open_for(self._trips, self._rng)
        self._consecutive = 0
        self._window.clear()

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._trips = self._consecutive = 0
        self._window.clear()


class EndpointSet:
    """The endpoints of one upstream service, each with its own breaker so failing ones are ejected.

    `pick()` round-robins over endpoints whose breaker admits a request; it returns None when every
    endpoint is ejected, which the caller answers like an open circuit.
    """

    def __init__(
        self, service: str, endpoints: Sequence[str], config: BreakerConfig,
        clock: Clock = time.monotonic, rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.members = [(ep, CircuitBreaker(f"{service}@{ep}", config, clock, rng)) for ep in endpoints]
        self._next = 0

    def pick(self, exclude: Iterable[str] = ()) -> tuple[str, CircuitBreaker] | None:
        """An endpoint to try (preferring ones not in `exclude`, e.g. those a retry already hit)."""
        skip = set(exclude)
        count = len(self.members)
        fallback: tuple[str, CircuitBreaker] | None = None
        for step in range(count):
            endpoint, breaker = member = self.members[(self._next + step) % count]
            if breaker.state is BreakerState.OPEN:
                continue
            if endpoint in skip:
                fallback = fallback or member
                continue
            if breaker.allow():
                self._next = (self._next + step + 1) % count
                return member
        if fallback is not None and fallback[1].allow():
            return fallback
        return None

    def panic_pick(self) -> tuple[str, CircuitBreaker]:
        """The next endpoint regardless of ejection (when traffic must flow, e.g. a forced close)."""
        member = self.members[self._next % len(self.members)]
        self._next = (self._next + 1) % len(self.members)
        return member

    def ejected(self) -> list[str]:
        """Endpoints currently ejected (their breaker is open)."""
        return [ep for ep, breaker in self.members if breaker.state is BreakerState.OPEN]
