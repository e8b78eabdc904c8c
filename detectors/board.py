"""The control plane's view of decisions: a versioned board fed from the decisions topic.

Every change bumps the version; long-poll watchers wait on a condition for a version newer than
theirs. Expired decisions are dropped from snapshots (proxies drop them at `expires_at` too).
"""

from __future__ import annotations

import logging
import threading
import uuid

from pydantic import ValidationError

from gatewatch.controlplane import DecisionSnapshot
from gatewatch.decisions import Decision, utcnow
from gatewatch.errors import GatewatchError
from gatewatch.spanlog import SpanLog, next_offsets

log = logging.getLogger(__name__)


class DecisionBoard:
    """Latest decision per target, with a version that only grows."""

    def __init__(self) -> None:
        self._decisions: dict[str, Decision] = {}
        self._version = 0
        self._cond = threading.Condition()

    def apply(self, decisions: list[Decision]) -> None:
        """Take newer decisions (the latest per target wins) and wake the watchers."""
        if not decisions:
            return
        with self._cond:
            for decision in decisions:
                self._decisions[decision.target.ref()] = decision
            self._version += 1
            self._cond.notify_all()

    def snapshot(self) -> DecisionSnapshot:
        """The active decisions now."""
        now = utcnow()
        with self._cond:
            expired = [ref for ref, d in self._decisions.items() if not d.is_active(now)]
            for ref in expired:
                del self._decisions[ref]
            if expired:
                self._version += 1
            return DecisionSnapshot(version=self._version, decisions=list(self._decisions.values()))

    def wait(self, since: int, timeout_s: float) -> DecisionSnapshot:
        """The snapshot as soon as its version is newer than `since`, or after `timeout_s` unchanged."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > since, timeout=timeout_s)
        return self.snapshot()


class TopicFollower:
    """Feeds a board from the decisions topic, replaying it from the start (it is compacted)."""

    def __init__(self, span_log: SpanLog, topic: str, board: DecisionBoard) -> None:
        # A group of its own: every control plane sees every decision.
        self._consumer = span_log.consumer(topic, f"gatewatch-controlplane-{uuid.uuid4().hex[:8]}")
        self._board = board
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controlplane-follower", daemon=True)

    def start(self) -> None:
        """Begin following in a background thread."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._consumer.poll(max_messages=1000, timeout_s=0.2)
            except GatewatchError as exc:
                log.warning("decisions topic unavailable: %s", exc)
                self._stop.wait(1.0)
                continue
            decisions = []
            for message in messages:
                try:
                    decisions.append(Decision.from_json(message.value))
                except ValidationError:
                    log.warning("skipping an invalid decision at offset %d", message.offset)
            self._board.apply(decisions)
            if messages:
                # Committing lets the embedded log trim; this group replays nothing after a restart anyway.
                self._consumer.commit(next_offsets(messages))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop following and leave the group."""
        self._stop.set()
        self._thread.join(timeout_s)
        self._consumer.close()
