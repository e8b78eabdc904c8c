"""Admission control on the sidecar's listeners: inbound max in-flight and outbound max connections
shed with 503 + Retry-After (the engine's mechanism, as in the gateway), counted per direction."""

from __future__ import annotations

import socket

import httpx
import pytest

from gatewatch.errors import ConfigError
from gatewatch.settings import Settings
from proxy.sidecar_config import parse_sidecar_config
from tests.test_gateway import wait_for
from tests.test_gateway_admission import burst, fds, flood_connections, metric_sum
from tests.test_sidecar_support import running_backend, running_sidecar

pytestmark = pytest.mark.timeout(60)

LIMITS = {"max_inflight": 2, "max_connections": 8, "retry_after_s": 2}


def _shed(admin_port: int, direction: str, reason: str) -> float:
    return metric_sum(admin_port, f'gatewatch_sidecar_shed_total{{direction="{direction}",reason="{reason}"}}')


def test_inbound_excess_inflight_gets_503_and_is_counted(settings: Settings) -> None:
    with running_backend(delay_s=1.5) as backend, running_sidecar(
        "shop", backend.port, settings, inbound={"limits": LIMITS}, config={"admin_port": 0},
    ) as sidecar:
        order = burst(sidecar.inbound_port, admitted=2, excess=5, headers={"x-gatewatch-caller": "gateway"})
        statuses = [status for status, _, _ in order]
        assert statuses == [503] * 5 + [200] * 2, order
        assert all(retry == "2" and '"error":"overloaded"' in text for status, retry, text in order if status == 503)
        assert backend.hits == 2  # shed requests never reached the local service
        assert _shed(sidecar.admin_port, "in", "inflight") == 5
        assert _shed(sidecar.admin_port, "out", "inflight") == 0
        backend.delay_s = 0
        assert httpx.get(f"http://127.0.0.1:{sidecar.inbound_port}/after").status_code == 200


def test_outbound_connections_beyond_the_limit_get_503_without_fd_growth(settings: Settings) -> None:
    with running_backend() as backend, running_sidecar(
        "shop", backend.port, settings, config={"admin_port": 0, "outbound": {"port": 0, "limits": LIMITS}},
    ) as sidecar:
        server = sidecar._servers[1]
        held = [socket.create_connection(("127.0.0.1", sidecar.outbound_port), timeout=5) for _ in range(8)]
        wait_for(lambda: len(server.connections) == 8, timeout_s=5)
        fds_before = fds()
        flood_connections(sidecar.outbound_port, 20)
        assert fds() <= fds_before + 2
        assert _shed(sidecar.admin_port, "out", "connections") == 20
        for sock in held:
            sock.close()
        wait_for(lambda: len(server.connections) == 0, timeout_s=5)
        # capacity is back: the listener answers again (404: no registered callee named "nowhere")
        assert httpx.get(f"http://127.0.0.1:{sidecar.outbound_port}/", headers={"host": "nowhere"}).status_code == 404


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"outbound\.limits\.max_inflight"):
        parse_sidecar_config({"service": "shop", "inbound": {"forward_to": "127.0.0.1:1"}, "tls": {"enabled": False},
                              "outbound": {"limits": {"max_inflight": -1}}})
