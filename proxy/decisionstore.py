"""Active decisions by target, answered in O(1) on the hot path and dropped at `expires_at`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the sidecar's data plane does not import pydantic (gatewatch.decisions)
    from gatewatch.decisions import Decision as Validated
    from gatewatch.decisionwire import Scope, WireDecision

    # Models (embedded mode, tests, detectors) or parsed wire decisions: the same attributes.
    Decision = Validated | WireDecision

_Entry = tuple[float, "Decision"]
Listener = Callable[["DecisionStore"], None]


class DecisionStore:
    """The proxy's copy of the control plane's decisions (fail static: kept until replaced or expired)."""

    def __init__(self) -> None:
        self._by_target: dict[tuple[str, str], list[_Entry]] = {}
        self.version = -1  # version of the snapshot last applied (-1: none yet)
        self.updated_at = 0.0  # time.time() of the last successful update
        self._listeners: list[Listener] = []

    def replace(self, decisions: Iterable[Decision], version: int | None = None) -> None:
        """Install a full snapshot: decisions not in it are gone, expired ones are skipped."""
        now = time.time()
        table: dict[tuple[str, str], list[_Entry]] = {}
        for decision in decisions:
            expires = decision.expires_at.timestamp()
            if expires > now:
                key = (decision.target.scope.value, decision.target.key)
                table.setdefault(key, []).append((expires, decision))
        self._by_target = table  # one assignment: readers see the old or the new table, never a mix
        if version is not None:
            self.version = version
        self.updated_at = now
        for listener in self._listeners:
            listener(self)

    def active(self, scope: Scope | str, key: str) -> list[Decision]:
        """Decisions in force for one target now (empty list when none)."""
        entries = self._by_target.get((scope if isinstance(scope, str) else scope.value, key))
        if not entries:
            return []
        now = time.time()
        return [decision for expires, decision in entries if expires > now]

    def all_active(self) -> list[Decision]:
        """Every decision in force now."""
        now = time.time()
        return [d for entries in self._by_target.values() for expires, d in entries if expires > now]

    def purge(self) -> int:
        """Drop expired decisions from memory; returns how many are still active."""
        now = time.time()
        table = {}
        for key, entries in self._by_target.items():
            alive = [entry for entry in entries if entry[0] > now]
            if alive:
                table[key] = alive
        self._by_target = table
        return sum(len(entries) for entries in table.values())

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(store)` after every update (e.g. to refresh a gauge or a breaker)."""
        self._listeners.append(listener)

    def __bool__(self) -> bool:
        """True while any decision (possibly just expired) is held: O(1), for the hot path."""
        return bool(self._by_target)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._by_target.values())
