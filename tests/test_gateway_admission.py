"""Admission control: the gateway's max in-flight requests and max connections shed with 503."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from gatewatch.settings import Settings
from proxy.gateway import GatewayService
from proxy.gatewayconfig import GatewayConfig
from tests.test_gateway import upstreams, wait_for  # noqa: F401 - fixture


@pytest.fixture
def guarded(settings: Settings, upstreams: list[int]) -> Iterator[GatewayService]:  # noqa: F811
    config = GatewayConfig.model_validate({
        "listen_port": 0, "admin_port": 0, "tracing": {"enabled": False},
        "limits": {"max_inflight": 2, "max_connections": 8, "retry_after_s": 2},
        "upstreams": {"echo": {"endpoints": [f"127.0.0.1:{upstreams[0]}"]}},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "upstream": "echo"}],
    })
    service = GatewayService(config, settings)
    service.start()
    try:
        yield service
    finally:
        service.stop(5)


def metric_sum(admin_port: int, series: str) -> float:
    """The value of one metric series (name{labels}) on an admin port's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics").text
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(series + " "))


def _shed_count(service: GatewayService, reason: str) -> float:
    return metric_sum(service.admin_port, f'gatewatch_gateway_shed_total{{reason="{reason}"}}')


Answer = tuple[int, str | None, str]  # status, Retry-After, body


def burst(port: int, admitted: int, excess: int, headers: dict[str, str] | None = None) -> list[Answer]:
    """`admitted` slow requests first, then `excess` more while those wait; answers in arrival order."""
    async def run() -> list[Answer]:
        order: list[Answer] = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
            async def one(i: int) -> None:
                answer = await client.get(f"/slow/{i}")
                order.append((answer.status_code, answer.headers.get("retry-after"), answer.text))
            slow = [asyncio.create_task(one(i)) for i in range(admitted)]
            await asyncio.sleep(0.3)  # all admitted and waiting on the slow (1.5 s) upstream
            await asyncio.gather(*(one(i) for i in range(admitted, admitted + excess)))
            await asyncio.gather(*slow)
        return order

    return asyncio.run(run())


def flood_connections(port: int, count: int) -> None:
    """Open `count` connections one by one; each must be answered 503 + Retry-After: 2 and closed."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            received = b""
            while chunk := extra.recv(4096):
                received += chunk
        assert received.startswith(b"HTTP/1.1 503 "), received[:200]
        assert b"retry-after: 2" in received and b"connection: close" in received


def test_excess_inflight_gets_503_at_once_and_admitted_complete(guarded: GatewayService) -> None:
    order = burst(guarded.port, admitted=2, excess=5)
    statuses = [status for status, _, _ in order]
    # the five excess requests were answered while the two admitted ones were still upstream
    assert statuses == [503] * 5 + [200] * 2, order
    assert all(retry == "2" and '"error":"overloaded"' in text for status, retry, text in order if status == 503)
    assert _shed_count(guarded, "inflight") == 5
    assert httpx.get(f"http://127.0.0.1:{guarded.port}/after").status_code == 200  # capacity came back


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_beyond_the_limit_get_503_and_close_without_fd_growth(guarded: GatewayService) -> None:
    held = [socket.create_connection(("127.0.0.1", guarded.port), timeout=5) for _ in range(8)]
    wait_for(lambda: len(guarded._server.connections) == 8, timeout_s=5)  # type: ignore[union-attr]
    fds_before = fds()
    flood_connections(guarded.port, 30)
    assert fds() <= fds_before + 2
    assert _shed_count(guarded, "connections") == 30
    for sock in held:
        sock.close()
    wait_for(lambda: len(guarded._server.connections) == 0, timeout_s=5)  # type: ignore[union-attr]
    assert httpx.get(f"http://127.0.0.1:{guarded.port}/again").status_code == 200
