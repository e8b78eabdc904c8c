"""Turns what detectors want each cycle into decisions: emit, renew, release, without flapping.

A wanted target gets a decision; while it stays wanted the same decision (same id) is renewed once
half its lifetime has passed, and re-issued at once if its kind or parameters change. A target
must go unwanted for `clear_cycles` cycles before it is released: a released circuit_open is
followed by a circuit_close, anything else simply expires. Every decision carries an expiry, so
nothing outlives the detector that took it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gatewatch.decisions import Decision, DecisionKind, Mode, Reason, Target


@dataclass(frozen=True)
class Want:
    """A detector's wish for one target in this cycle."""

    kind: DecisionKind
    target: Target
    reason: Reason
    params: dict[str, Any]
    mode: Mode


Publish = Callable[[Sequence[Decision]], None]


class DecisionKeeper:
    """The decisions of one detector, reconciled against its wants every cycle."""

    def __init__(self, ttl_s: float, clear_cycles: int, publish: Publish) -> None:
        self.ttl = timedelta(seconds=ttl_s)
        self.clear_cycles = clear_cycles
        self.publish = publish
        self.active: dict[str, Decision] = {}
        self._misses: dict[str, int] = {}

    def holds(self, target: Target) -> bool:
        """True while this keeper has a live decision on `target` (for detectors' hysteresis)."""
        return target.ref() in self.active

    def restore(self, decision: Decision) -> None:
        """Hold a decision taken before a restart as if this keeper had issued it (nothing is sent)."""
        self.active[decision.target.ref()] = decision

    def reconcile(self, wants: Sequence[Want], now: datetime) -> list[Decision]:
        """Emit what is new, changed or half-expired; release what stayed unwanted. Returns what was sent."""
        out: list[Decision] = []
        wanted = {want.target.ref(): want for want in wants}
        for ref, want in wanted.items():
            self._misses.pop(ref, None)
            current = self.active.get(ref)
            if current is None or current.kind != want.kind or current.params != want.params:
                decision = self._new(want, now)
            elif current.expires_at - now <= self.ttl / 2:
                decision = current.model_copy(update={"created_at": now, "expires_at": now + self.ttl,
                                                      "reason": want.reason})
            else:
                continue
            self.active[ref] = decision
            out.append(decision)
        for ref in [r for r in self.active if r not in wanted]:
            released = self._release(ref, now)
            if released:
                out.append(released)
        for ref in [r for r, d in self.active.items() if not d.is_active(now)]:
            del self.active[ref]  # expired while not renewed (e.g. the process was paused)
        if out:
            self.publish(out)
        return out

    def _new(self, want: Want, now: datetime) -> Decision:
        return Decision(kind=want.kind, target=want.target, reason=want.reason, params=want.params,
                        mode=want.mode, created_at=now, expires_at=now + self.ttl)

    def _release(self, ref: str, now: datetime) -> Decision | None:
        self._misses[ref] = self._misses.get(ref, 0) + 1
        if self._misses[ref] < self.clear_cycles:
            return None
        current = self.active.pop(ref)
        del self._misses[ref]
        if current.kind != DecisionKind.CIRCUIT_OPEN:
            return None
        reason = current.reason.model_copy(update={"score": 0.0})
        return self._new(Want(DecisionKind.CIRCUIT_CLOSE, current.target, reason, {}, current.mode), now)
