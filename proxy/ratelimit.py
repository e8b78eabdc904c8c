"""GCRA rate limiting (a token bucket as one timestamp per key) and the RateLimit-* header fields."""

from __future__ import annotations

import math
import time
from typing import Final, Protocol

_monotonic: Final = time.monotonic


class TatTable(Protocol):
    """Theoretical arrival times shared by processes (`proxy.sharedlimits.SharedTatTable`)."""

    def take(self, key_hash: int, now: float, interval: float, tolerance: float) -> tuple[bool, float]:
        """One GCRA step for `key_hash`: (allowed, the key's TAT before this request, at least `now`)."""
        ...


class Verdict:
    """The outcome of one check, with what the RateLimit-* fields need."""

    __slots__ = ("allowed", "limit", "remaining", "reset_s", "retry_after_s")

    def __init__(self, allowed: bool, limit: int, remaining: int, reset_s: float, retry_after_s: float) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[str, str]]:
        """RateLimit-Limit/-Remaining/-Reset (IETF httpapi draft) plus Retry-After when denied."""
        fields = [
            ("ratelimit-limit", str(self.limit)),
            ("ratelimit-remaining", str(self.remaining)),
            ("ratelimit-reset", str(math.ceil(self.reset_s))),
        ]
        if not self.allowed:
            fields.append(("retry-after", str(max(1, math.ceil(self.retry_after_s)))))
        return fields


class _Lease:
    """Units of one key a worker took from the shared table at once."""

    __slots__ = ("table_left", "tat", "units", "until")

    def __init__(self, units: int, until: float, table_left: int, tat: float) -> None:
        self.units = units
        self.until = until
        self.table_left = table_left  # units the table still had after this lease was taken
        self.tat = tat  # the key's TAT after it


def gcra_step(stored_tat: float | None, now: float, interval: float, tolerance: float) -> tuple[bool, float]:
    """One GCRA step: (allowed, the key's TAT before this request, at least `now`); when allowed
    the caller stores TAT + `interval`."""
    tat = now if stored_tat is None or stored_tat < now else stored_tat
    return now >= tat + interval - tolerance, tat


LEASE_MAX_UNITS: Final = 64
LEASE_BURST_SHARE: Final = 16  # a lease takes at most 1/16 of the burst
LEASE_S: Final = 0.05  # a lease's units not used within this are given up


class Gcra:
    """Generic cell rate algorithm: `rate_per_s` sustained, `burst` at once, per key.

    State is this process's, or with `shared` the table the gateway's worker processes share;
    `name` then tells this limiter's keys from other limiters' (same name in every worker).

    With a shared table, a worker takes units for a busy key in leases of up to 64 (never more
    than 1/16 of the burst, so bursts under 32 are exact), then admits from its lease for up to
    50 ms without touching the table: the table's lock was ~16 us of a `workers: 2` request on
    one hot key. The table still counts every unit, so the sustained rate holds exactly; a lease
    used late can let one burst exceed `burst` by its size, and units left when it lapses are lost.
    """

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000,
                 shared: TatTable | None = None, name: str = "") -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.interval = 1.0 / rate_per_s
        self.tolerance = self.interval * burst
        self.max_keys = max_keys
        self._tat: dict[str, float] = {}  # theoretical arrival time per key
        self._shared = shared
        # A new shape starts fresh, as a new local limiter does (forked workers share hash()).
        self._namespace = (name, rate_per_s, burst)
        self.lease_units = min(LEASE_MAX_UNITS, burst // LEASE_BURST_SHARE) if shared is not None else 0
        self._leases: dict[str, _Lease] = {}

    def check(self, key: str, now: float | None = None) -> Verdict:
        """Take one unit for `key` if allowed; never blocks."""
        now = _monotonic() if now is None else now
        if self._shared is not None:
            if self.lease_units > 1:
                verdict = self._from_lease(key, now)
                if verdict is not None:
                    return verdict
            allowed, tat = self._shared.take(self._key_hash(key), now, self.interval, self.tolerance)
        else:
            allowed, tat = gcra_step(self._tat.get(key), now, self.interval, self.tolerance)
            if allowed:
                if len(self._tat) >= self.max_keys and key not in self._tat:
                    self._evict(now)
                self._tat[key] = tat + self.interval
        new_tat = tat + self.interval
        allow_at = new_tat - self.tolerance
        if not allowed:
            return Verdict(False, self.burst, 0, tat - now, allow_at - now)
        remaining = int((now - allow_at) / self.interval + 1e-9)
        return Verdict(True, self.burst, min(remaining, self.burst), new_tat - now, 0.0)

    def _key_hash(self, key: str) -> int:
        """`key`'s slot key in the shared table (the same in every worker: they share hash())."""
        return hash((self._namespace, key))

    def _from_lease(self, key: str, now: float) -> Verdict | None:
        """A unit of `key`'s lease, taking a new lease when it is used up or lapsed; None when the
        table has fewer units left than a lease (the caller then takes one, exactly)."""
        lease = self._leases.get(key)
        if lease is None or lease.units == 0 or now >= lease.until:
            assert self._shared is not None
            size = self.lease_units
            allowed, tat = self._shared.take(self._key_hash(key), now, self.interval * size, self.tolerance)
            if not allowed:
                return None
            if len(self._leases) >= self.max_keys:
                self._leases = {held: old for held, old in self._leases.items() if old.until > now}
            new_tat = tat + self.interval * size
            left = int((now - (new_tat - self.tolerance)) / self.interval + 1e-9)  # in the table, after it
            lease = self._leases[key] = _Lease(size, now + LEASE_S, left, new_tat)
        lease.units -= 1
        return Verdict(True, self.burst, min(lease.units + lease.table_left, self.burst), lease.tat - now, 0.0)

    def _evict(self, now: float) -> None:
        """Forget keys whose bucket is full again (their state equals a fresh key's)."""
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
        if len(self._tat) >= self.max_keys:  # still full of active keys: drop the oldest half
            keep = sorted(self._tat.items(), key=lambda item: item[1])[len(self._tat) // 2:]
            self._tat = dict(keep)

    def same_shape(self, rate_per_s: float, burst: int) -> bool:
        """True when this limiter already enforces these parameters (keep its state on reload)."""
        return self.rate_per_s == rate_per_s and self.burst == burst

    def __len__(self) -> int:
        return len(self._tat)
