"""Where a proxy's decisions come from: the detectors' control plane (long-poll watch) or, when no
URL is configured, a local decisions file re-read on change. Both keep the last good state when
their source fails (fail static); the store drops each decision at its `expires_at`."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

from gatewatch.decisionwire import (
    DECISIONS_PATH,
    MAX_WATCH_TIMEOUT_S,
    WATCH_PATH,
    WireDecision,
    parse_wire_decision,
    parse_wire_snapshot,
)
from proxy.bodies import BodyTooLarge, close_body, limit_body
from proxy.decisionstore import DecisionStore
from proxy.policy import Exchange, Headers, ProxyError, Request
from proxy.upstream import Cluster, Endpoint, UpstreamCaller

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

log = logging.getLogger(__name__)
MAX_SNAPSHOT_BYTES = 16 << 20  # a larger answer is refused (and the last state kept)


class DecisionSource(Protocol):
    """Feeds a DecisionStore until cancelled."""

    async def run(self) -> None:
        """Keep the store up to date; never raises except CancelledError."""


class ControlPlaneClient:
    """Long-polls `GET /v1/decisions/watch?since=<version>&timeout=<s>` with the bearer token, on
    the proxy engine's own upstream client (keep-alive, timeouts): no HTTP library, no pydantic."""

    def __init__(
        self, store: DecisionStore, url: str, token: str, watch_timeout_s: float = 30.0,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.store = store
        self.base = url.rstrip("/")
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"control plane URL must be http(s)://host[:port], got {url!r}")
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        port = parts.port or (443 if tls else 80)
        self._cluster = Cluster("control-plane", [Endpoint(parts.hostname, port, tls, parts.hostname if tls else None)],
                                max_failures=1 << 30)  # backoff is ours; never eject the only endpoint
        self._prefix = parts.path
        self._headers = [("host", parts.netloc)] + ([("authorization", f"Bearer {token}")] if token else [])
        self.watch_timeout_s = min(watch_timeout_s, MAX_WATCH_TIMEOUT_S)
        self.max_backoff_s = max_backoff_s
        self.connected = False
        self.failures = 0

    async def run(self) -> None:
        backoff = 0.2
        caller = UpstreamCaller(add_forwarded=False)
        try:
            while True:
                try:
                    version, decisions = await self._watch(caller)
                except (ProxyError, OSError, ValueError) as exc:
                    self._failed(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                backoff = 0.2
                if not self.connected:
                    log.info("control plane connected at %s", self.base)
                self.connected = True
                if version != self.store.version or self.store.version < 0:
                    self.store.replace(decisions, version)
        finally:
            caller.close()

    async def _watch(self, caller: UpstreamCaller) -> tuple[int, list[WireDecision]]:
        if self.store.version < 0:  # first contact: the current snapshot, then watch from its version
            path, query = DECISIONS_PATH, ""
        else:
            path = WATCH_PATH
            query = urlencode({"since": str(self.store.version), "timeout": f"{self.watch_timeout_s:g}"})
        exchange = Exchange(Request("GET", self._prefix + path, query, Headers(self._headers)), "")
        exchange.upstream, exchange.timeout_s = self._cluster, self.watch_timeout_s + 10.0
        response = await caller(exchange)
        body = await _read(response.body)
        if response.status == 401:
            raise ValueError("control plane rejected the token (401); check GATEWATCH_CONTROL_TOKEN")
        if response.status != 200:
            raise ValueError(f"control plane answered {response.status}")
        return parse_wire_snapshot(json.loads(body))

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.connected or self.failures == 1:
            # Fail static: the store keeps what it has; say so once per outage, not per retry.
            log.warning("control plane unreachable (%s: %s); keeping %d decisions", type(exc).__name__,
                        str(exc)[:200], len(self.store))
        self.connected = False


async def _read(body: bytes | AsyncIterable[bytes]) -> bytes:
    """A whole response body, refused beyond MAX_SNAPSHOT_BYTES."""
    if isinstance(body, bytes):
        return body
    try:
        return b"".join([chunk async for chunk in limit_body(body, MAX_SNAPSHOT_BYTES)])
    except BodyTooLarge:
        raise ValueError(f"control plane answer over {MAX_SNAPSHOT_BYTES} bytes") from None
    finally:
        await close_body(body)  # refused mid-body: its connection is closed, not left half-read


def parse_decisions_file(data: bytes) -> tuple[list[WireDecision], int | None]:
    """Decisions from a file: a JSON list of decisions, or a snapshot object `{"version", "decisions"}`."""
    document: Any = json.loads(data or b"[]")
    if isinstance(document, dict):
        version, decisions = parse_wire_snapshot(document)
        return decisions, version
    if not isinstance(document, list):
        raise ValueError("must be a JSON list of decisions or a snapshot object")
    return [parse_wire_decision(item) for item in document], None


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
        except (OSError, ValueError) as exc:
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
