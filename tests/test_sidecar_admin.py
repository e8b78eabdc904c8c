"""The sidecar's admin port: OpenMetrics (requests, retries, breaker rejections, breaker state
per edge) and /healthz, on a port of its own (0 = any free one)."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gatewatch.settings import Settings
from tests.test_sidecar_support import running_backend, running_sidecar

pytestmark = pytest.mark.timeout(60)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))  # the client sorts labels
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_admin_port_counts_requests_retries_and_breaker_rejections(settings: Settings) -> None:
    config = {"breaker": {"consecutive_failures": 2, "jitter": 0.0, "base_open_s": 30},
              "retry": {"max_retries": 1, "backoff_base_s": 0.0}}
    with (
        running_backend(status=503) as payment,
        running_sidecar("payment", payment.port, settings) as callee,
        running_sidecar("checkout", 1, settings, {"payment": [callee.inbound_port]}, config=config) as checkout,
    ):
        admin = f"http://127.0.0.1:{checkout.admin_port}"
        assert checkout.admin_port not in (checkout.inbound_port, checkout.outbound_port)
        before = httpx.get(f"{admin}/metrics").text
        assert metric(before, "gatewatch_sidecar_breaker_state", edge="checkout->payment") == 0  # closed
        first = httpx.get(f"http://127.0.0.1:{checkout.outbound_port}/", headers={"host": "payment"}, timeout=10)
        assert first.status_code == 503 and "x-gatewatch-breaker" not in first.headers  # the callee's own 503
        rejected = httpx.get(f"http://127.0.0.1:{checkout.outbound_port}/", headers={"host": "payment"}, timeout=10)
        assert rejected.headers["x-gatewatch-breaker"] == "checkout->payment"
        scraped = httpx.get(f"{admin}/metrics")
        assert scraped.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        text = scraped.text
        families = {family.name: family.type for family in text_string_to_metric_families(text)}  # or ValueError
        assert families["gatewatch_sidecar_requests"] == "counter"
        assert families["gatewatch_sidecar_breaker_state"] == "gauge"
        assert metric(text, "gatewatch_sidecar_requests_total", direction="out", peer="payment", code="503") == 2
        assert metric(text, "gatewatch_sidecar_retries_total", service="payment") == 1
        assert metric(text, "gatewatch_sidecar_breaker_rejections_total", edge="checkout->payment") == 1
        assert metric(text, "gatewatch_sidecar_breaker_state", edge="checkout->payment") == 2  # open
        callee_text = httpx.get(f"http://127.0.0.1:{callee.admin_port}/metrics").text
        assert metric(callee_text, "gatewatch_sidecar_requests_total", direction="in", peer="", code="503") == 2
        health = httpx.get(f"{admin}/healthz").json()
        assert health["status"] == "ok" and health["service"] == "checkout"
        assert health["breakers"] == {"checkout->payment": "open"}
        assert httpx.get(f"{admin}/nope").status_code == 404


def test_admin_port_from_config_and_busy_port_is_a_clear_error(settings: Settings) -> None:
    from gatewatch.errors import GatewatchError

    with running_sidecar("checkout", 1, settings) as first:
        taken = first.admin_port
        with pytest.raises(GatewatchError, match="admin"), running_sidecar("other", 1, settings,
                                                                           config={"admin_port": taken}):
            pass
        assert httpx.get(f"http://127.0.0.1:{taken}/healthz").json()["service"] == "checkout"
