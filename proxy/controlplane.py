"""Where a proxy's decisions come from: the detectors' control plane (long-poll watch) or, when no
URL is configured, a local decisions file re-read on change. Both keep the last good state when
their source fails (fail static); the store drops each decision at its `expires_at`."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import TypeAdapter, ValidationError

from gatewatch.controlplane import DECISIONS_PATH, MAX_WATCH_TIMEOUT_S, WATCH_PATH, DecisionSnapshot
from gatewatch.decisions import Decision
from proxy.decisionstore import DecisionStore

log = logging.getLogger(__name__)
_DECISION_LIST = TypeAdapter(list[Decision])


class DecisionSource(Protocol):
    """Feeds a DecisionStore until cancelled."""

    async def run(self) -> None:
        """Keep the store up to date; never raises except CancelledError."""


class ControlPlaneClient:
    """Long-polls `GET /v1/decisions/watch?since=<version>&timeout=<s>` with the bearer token."""

    def __init__(
        self, store: DecisionStore, url: str, token: str, watch_timeout_s: float = 30.0,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.store = store
        self.base = url.rstrip("/")
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self.watch_timeout_s = min(watch_timeout_s, MAX_WATCH_TIMEOUT_S)
        self.max_backoff_s = max_backoff_s
        self.connected = False
        self.failures = 0

    async def run(self) -> None:
        backoff = 0.2
        async with httpx.AsyncClient(timeout=self.watch_timeout_s + 10.0) as client:
            while True:
                try:
                    snapshot = await self._watch(client)
                except (httpx.HTTPError, ValidationError, ValueError) as exc:
                    self._failed(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                backoff = 0.2
                if not self.connected:
                    log.info("control plane connected at %s", self.base)
                self.connected = True
                if snapshot.version != self.store.version or self.store.version < 0:
                    self.store.replace(snapshot.decisions, snapshot.version)

    async def _watch(self, client: httpx.AsyncClient) -> DecisionSnapshot:
        if self.store.version < 0:  # first contact: the current snapshot, then watch from its version
            response = await client.get(self.base + DECISIONS_PATH, headers=self._headers)
        else:
            params = {"since": str(self.store.version), "timeout": f"{self.watch_timeout_s:g}"}
            response = await client.get(self.base + WATCH_PATH, params=params, headers=self._headers)
        if response.status_code == 401:
            raise ValueError("control plane rejected the token (401); check GATEWATCH_CONTROL_TOKEN")
        response.raise_for_status()
        return DecisionSnapshot.model_validate_json(response.content)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.connected or self.failures == 1:
            # Fail static: the store keeps what it has; say so once per outage, not per retry.
            log.warning("control plane unreachable (%s); keeping %d decisions", type(exc).__name__, len(self.store))
        self.connected = False


def parse_decisions_file(data: bytes) -> tuple[list[Decision], int | None]:
    """Decisions from a file: a JSON list of Decision objects, or a DecisionSnapshot object."""
    document = json.loads(data or b"[]")
    if isinstance(document, dict):
        snapshot = DecisionSnapshot.model_validate(document)
        return snapshot.decisions, snapshot.version
    return _DECISION_LIST.validate_python(document), None


class DecisionFile:
    """Reads a local decisions file and re-reads it whenever its mtime or size changes."""

    def __init__(self, store: DecisionStore, path: Path, interval_s: float = 0.5) -> None:
        self.store = store
        self.path = path
        self.interval_s = interval_s
        self._seen: tuple[int, int] | None = None

    def poll(self) -> bool:
        """Apply the file if it changed; returns True when the store was updated."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            decisions, version = parse_decisions_file(self.path.read_bytes())
        except (OSError, ValueError, ValidationError) as exc:
            log.warning("decisions file %s is invalid, keeping the last state: %s", self.path, str(exc)[:200])
            return False
        self.store.replace(decisions, version)
        return True

    async def run(self) -> None:
        while True:
            self.poll()
            self.store.purge()
            await asyncio.sleep(self.interval_s)


def decision_source(url: str, token: str, store: DecisionStore, decisions_file: Path | None) -> DecisionSource | None:
    """The control-plane client when a URL is configured, else the local file (if any)."""
    if url:
        return ControlPlaneClient(store, url, token)
    if decisions_file is not None:
        return DecisionFile(store, decisions_file)
    return None
