"""Sidecars keep the upstream connections a burst opened (no handshake storm on the next burst)."""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor

import pytest

from gatewatch.settings import Settings
from tests.test_sidecar_support import running_backend, running_sidecar

pytestmark = pytest.mark.timeout(60)
BURST = 80  # more than the engine's default of 64 idle connections per endpoint


def _get(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/burst", headers={"host": "payment"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_burst_keeps_its_connections_to_the_callee_sidecar(settings: Settings) -> None:
    with (
        running_backend(delay_s=1.0) as payment,  # slow enough that the whole burst is in flight at once
        running_sidecar("payment", payment.port, settings) as payment_sidecar,
        running_sidecar("checkout", 1, settings, {"payment": [payment_sidecar.inbound_port]}) as checkout,
        ThreadPoolExecutor(BURST) as pool,
    ):
        statuses = list(pool.map(lambda _: _get(checkout.outbound_port), range(BURST)))
        assert statuses == [200] * BURST
        # Both hops keep the connections the burst opened (more than 64 were in flight), idle.
        opened = checkout._callers[1].pool.open_connections
        assert 64 < opened <= BURST
        assert 64 < payment_sidecar._callers[0].pool.open_connections <= BURST
