"""Sidecars keep the upstream connections a burst opened (no handshake storm on the next burst)."""

from __future__ import annotations

import http.client
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import pytest

from gatewatch.settings import Settings
from tests.test_sidecar_support import Backend, Behaviour, running_backend, running_sidecar

pytestmark = pytest.mark.timeout(90)
BURST = 80  # more than the 64 idle connections per endpoint the engine used to keep


def _get(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/burst", headers={"host": "payment"})
        return connection.getresponse().status
    finally:
        connection.close()


def _answer_when_all_arrived(barrier: threading.Barrier) -> Behaviour:
    """Hold each request until the whole burst reached the backend: every connection is then in use at once."""

    def answer(backend: Backend, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return 500, b"the burst never was in flight at once"
        return 200, b"ok"

    return answer


def test_a_burst_keeps_its_connections_to_the_callee_sidecar(settings: Settings) -> None:
    barrier = threading.Barrier(BURST, timeout=30)
    # Tries may wait for the slowest of the burst on a loaded machine: no timeout may cut one short.
    patient = {"retry": {"per_try_timeout_s": 40.0, "deadline_s": 45.0}}
    with (
        running_backend(behaviour=_answer_when_all_arrived(barrier)) as payment,
        running_sidecar("payment", payment.port, settings) as payment_sidecar,
        running_sidecar("checkout", 1, settings, config={"services": {"payment": {
            "endpoints": [f"127.0.0.1:{payment_sidecar.inbound_port}"], **patient}}}) as checkout,
        ThreadPoolExecutor(BURST) as pool,
    ):
        statuses = list(pool.map(lambda _: _get(checkout.outbound_port), range(BURST)))
        assert statuses == [200] * BURST
        # Both hops keep the connections the burst opened (more than 64 were in flight), idle.
        opened = checkout._callers[1].pool.open_connections
        assert 64 < opened <= BURST
        assert 64 < payment_sidecar._callers[0].pool.open_connections <= BURST
