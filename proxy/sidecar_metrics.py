"""Prometheus metrics of one sidecar (gatewatch_sidecar_*), served on its admin port.

Requests are counted per direction (`in`: callers -> local service, `out`: local service ->
callee), peer and status code; admission-control sheds per direction and reason; retries and
breaker rejections per callee; each edge's breaker state is a gauge read at scrape time (0 closed,
1 half-open, 2 open).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from proxy.breaker import BreakerState, CircuitBreaker
from proxy.circuit import BREAKER_HEADER
from proxy.identity import CALLER_ATTRIBUTE
from proxy.metrics import CounterCache, span_outcomes
from proxy.policy import CallNext, Exchange, Response
from proxy.retrying import RESEND_ATTRIBUTE
from proxy.sidecar_registry import Upstream

STATE_VALUE: Final = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class SidecarMetrics(CounterCache):
    """The sidecar's metric families on a registry of its own (one per SidecarService)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry
        self.requests = Counter(
            "gatewatch_sidecar_requests", "Requests answered", ["direction", "peer", "code"], registry=registry,
        )
        self.retries = Counter(
            "gatewatch_sidecar_retries", "Outbound retries (tries after the first)", ["service"], registry=registry,
        )
        self.breaker_rejections = Counter(
            "gatewatch_sidecar_breaker_rejections", "Outbound requests answered 503 by an open circuit",
            ["edge"], registry=registry,
        )
        self.shed = Counter(
            "gatewatch_sidecar_shed", "Requests/connections refused with 503 by admission control",
            ["direction", "reason"], registry=registry,
        )
        self.span_outcome = span_outcomes(registry)
        self.breaker_state = Gauge(
            "gatewatch_sidecar_breaker_state", "Circuit breaker state per edge: 0 closed, 1 half-open, 2 open",
            ["edge"], registry=registry,
        )

    def shed_hook(self, direction: str) -> Callable[[str], None]:
        """The listener's on_shed callback: counts one shed request/connection of `direction`."""
        return lambda reason: self.count(self.shed, direction, reason)

    def watch_breakers(self, registry: dict[str, Upstream]) -> None:
        """Export each callee's breaker state (read when scraped, so it is never stale)."""
        for upstream in registry.values():
            self.breaker_state.labels(upstream.edge).set_function(_state_of(upstream.breaker))


def _state_of(breaker: CircuitBreaker) -> Callable[[], float]:
    return lambda: STATE_VALUE[breaker.state]


class SidecarMetricsPolicy:
    """Outermost policy of a sidecar chain: counts each exchange when its response is written."""

    name = "metrics"

    def __init__(self, metrics: SidecarMetrics, direction: str, peer_label: bool = True) -> None:
        self.metrics = metrics
        self.direction = direction
        self.peer_label = peer_label  # off for unverified inbound callers: a header must not mint labels

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        exchange.on_complete(self._observe)
        response = await call_next(exchange)
        edge = response.headers.get(BREAKER_HEADER)
        if edge is not None and response.status == 503:
            self.metrics.count(self.metrics.breaker_rejections, edge)
        return response

    def _observe(self, exchange: Exchange, status: int) -> None:
        metrics = self.metrics
        # outbound: the callee the route picked (registry names only); inbound: the caller identity
        peer = exchange.route if self.direction == "out" else exchange.attributes.get(CALLER_ATTRIBUTE)
        metrics.count(metrics.requests, self.direction, str(peer or "") if self.peer_label else "", str(status))
        resends = exchange.attributes.get(RESEND_ATTRIBUTE)
        if isinstance(resends, int) and resends > 0 and exchange.route:
            metrics.count(metrics.retries, str(exchange.route), amount=resends)
