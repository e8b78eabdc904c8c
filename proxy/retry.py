"""Bounded retries: which requests may be retried, how long to wait, and how many retries overall.

* Only idempotent methods are retried by default (RFC 9110 section 9.2.2).
* Backoff is exponential with full jitter, so synchronized clients do not retry in lockstep.
* A `RetryBudget` caps retries to a ratio of active requests (Envoy's retry budget, 20%) plus a
  small minimum rate, so under a total outage retries add at most that much load.
* A `Deadline` bounds the whole exchange; each try gets min(per-try timeout, what is left).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from annotated_types import Ge, Gt, Le

from proxy.bounds import check_bounds

Clock = Callable[[], float]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
RETRIABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Retry policy of one upstream service. A plain dataclass: pydantic validates it inside the
    sidecar config (same bounds), and the data plane builds it without importing pydantic."""

    __pydantic_config__: ClassVar[Any] = {"extra": "forbid"}

    max_retries: Annotated[int, Ge(0), Le(10)] = 2
    per_try_timeout_s: Annotated[float, Gt(0.0)] = 2.0
    deadline_s: Annotated[float, Gt(0.0)] = 10.0
    backoff_base_s: Annotated[float, Ge(0.0)] = 0.025
    backoff_max_s: Annotated[float, Ge(0.0)] = 0.25
    methods: frozenset[str] = IDEMPOTENT_METHODS
    statuses: frozenset[int] = RETRIABLE_STATUSES
    budget_ratio: Annotated[float, Ge(0.0), Le(1.0)] = 0.2
    budget_min_per_s: Annotated[float, Ge(0.0)] = 3.0

    def __post_init__(self) -> None:
        check_bounds(self)
        object.__setattr__(self, "methods", frozenset(method.upper() for method in self.methods))
        object.__setattr__(self, "statuses", frozenset(self.statuses))

    def may_retry_method(self, method: str) -> bool:
        """Whether requests with this method are ever retried."""
        return method.upper() in self.methods


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Full-jitter backoff before retry number `attempt` (1-based): uniform(0, min(max, base*2^(n-1)))."""
    ceiling = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0.0, ceiling)


@dataclass(slots=True)
class RetryBudget:
    """Admits a retry while active retries stay within `ratio` of active requests, or while a
    token bucket refilled at `min_per_s` has a token (so low traffic can still retry a little)."""

    ratio: float = 0.2
    min_per_s: float = 3.0
    clock: Clock = time.monotonic
    active_requests: int = 0
    active_retries: int = 0
    _tokens: float = field(default=-1.0, repr=False)
    _refilled_at: float = field(default=0.0, repr=False)

    def request_started(self) -> None:
        """A request (first try) began."""
        self.active_requests += 1

    def request_finished(self) -> None:
        """A request (with all its retries) ended."""
        self.active_requests = max(0, self.active_requests - 1)

    def try_acquire_retry(self) -> bool:
        """Take budget for one retry; pair with `retry_finished()` when it was granted."""
        if self.active_retries + 1 <= self.ratio * self.active_requests or self._take_token():
            self.active_retries += 1
            return True
        return False

    def retry_finished(self) -> None:
        """A granted retry ended."""
        self.active_retries = max(0, self.active_retries - 1)

    def _take_token(self) -> bool:
        if self.min_per_s <= 0:
            return False
        now = self.clock()
        capacity = max(1.0, self.min_per_s)
        if self._tokens < 0:
            self._tokens, self._refilled_at = capacity, now
        self._tokens = min(capacity, self._tokens + (now - self._refilled_at) * self.min_per_s)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Deadline:
    """The overall time limit of one exchange."""

    def __init__(self, total_s: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.expires_at = clock() + total_s

    def remaining_s(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.expires_at - self._clock())

    @property
    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining_s() <= 0.0

    def try_timeout_s(self, per_try_s: float) -> float:
        """The timeout of the next try: the per-try timeout, cut to what the deadline leaves."""
        return min(per_try_s, self.remaining_s())
