"""Outbound circuit-breaker policy: fail fast with 503 while the callee's breaker is open.

The breaker sees each request's final outcome (after retries): a 5xx or an upstream error is a
failure. Open answers name the breaker in `x-gatewatch-breaker` (the `caller->callee` edge) and
say when to come back in `retry-after`.
"""

from __future__ import annotations

import math
from typing import Final

from proxy.breaker import BreakerState
from proxy.policy import CallNext, Exchange, ProxyError, Response
from proxy.sidecar_registry import Upstream

BREAKER_HEADER: Final = "x-gatewatch-breaker"
STATE_ATTRIBUTE: Final = "gatewatch.breaker.state"


class CircuitOpen(ProxyError):
    """The callee's circuit is open: answered locally without calling it."""

    default_status = 503
    default_code = "circuit_open"


class BreakerPolicy:
    """Admits requests through the callee's service breaker and records their outcome."""

    name = "breaker"

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        upstream: Upstream = exchange.state["upstream"]
        breaker = upstream.breaker
        if not breaker.allow():
            exchange.set_attribute(STATE_ATTRIBUTE, BreakerState.OPEN.value)
            return open_response(upstream, f"circuit {upstream.edge} is open")
        exchange.set_attribute(STATE_ATTRIBUTE, breaker.state.value)
        try:
            response = await call_next(exchange)
        except ProxyError:
            breaker.record(False)
            raise
        except BaseException:
            breaker.release()  # cancelled (client gone): no verdict on the callee
            raise
        breaker.record(response.status < 500)
        return response


def open_response(upstream: Upstream, message: str) -> Response:
    """The fail-fast 503 naming the breaker."""
    response = CircuitOpen(message).response()
    response.headers.set(BREAKER_HEADER, upstream.edge)
    response.headers.set("retry-after", str(max(1, math.ceil(upstream.breaker.retry_after_s()))))
    return response
