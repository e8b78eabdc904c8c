"""Whether the span log can take writes: the answer behind /readyz and fast 503s."""

from __future__ import annotations

import socket
import threading
import time

from gatewatch.spanlog import LogProducer


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """(host, port) pairs of a Kafka bootstrap list like `a:9092,b:9092`."""
    addresses = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    return addresses


def accepts_connections(addresses: list[tuple[str, int]], timeout_s: float = 0.5) -> bool:
    """True if any of the addresses accepts a TCP connection."""
    for address in addresses:
        try:
            with socket.create_connection(address, timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


class SpanLogReadiness:
    """Ready = (for Kafka) a broker accepts TCP connections and no write failed in the last moments.

    The TCP probe result is cached for `probe_interval_s`, so asking on every request is cheap;
    kafka-python's own connection state does not say when every broker is gone. A failed write
    counts for `failure_memory_s` only, so readiness comes back even if no traffic arrives.
    """

    def __init__(
        self, producer: LogProducer, bootstrap: str = "", probe_interval_s: float = 1.0, failure_memory_s: float = 5.0
    ) -> None:
        self._producer = producer
        self._addresses = bootstrap_addresses(bootstrap)
        self._interval = probe_interval_s
        self._lock = threading.Lock()
        self._probed_at = float("-inf")
        self._probe_ok = True
        self._failure_memory = failure_memory_s
        self._failed_at: float | None = None

    def record_write(self, ok: bool) -> None:
        """Remember the outcome of the latest write."""
        self._failed_at = None if ok else time.monotonic()

    def reachable(self) -> bool:
        """True if a write has a chance to succeed now."""
        if not self._addresses:
            return self._producer.healthy()
        with self._lock:
            now = time.monotonic()
            if now - self._probed_at >= self._interval:
                self._probe_ok = accepts_connections(self._addresses)
                self._probed_at = now
            return self._probe_ok

    def ready(self) -> bool:
        """True when the span log is reachable and the latest write did not just fail."""
        failed_at = self._failed_at
        recent_failure = failed_at is not None and time.monotonic() - failed_at < self._failure_memory
        return self.reachable() and not recent_failure
