"""Prometheus metrics of the gateway, on a registry of its own (one per GatewayService)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy.policy import CallNext, Exchange, Response


class CounterCache:
    """Labelled counters with cached children, so counting on the hot path is a dict lookup."""

    def __init__(self) -> None:
        self._counters: dict[tuple[int, tuple[str, ...]], Counter] = {}

    def count(self, counter: Counter, *labels: str, amount: float = 1) -> None:
        """Increment a labelled counter (children cached: `labels()` takes a lock and builds a key)."""
        key = (id(counter), labels)
        child = self._counters.get(key)
        if child is None:
            if len(self._counters) > 10_000:  # label values from requests could grow this without bound
                self._counters.clear()
            child = self._counters[key] = counter.labels(*labels)
        child.inc(amount)


def span_outcomes(registry: CollectorRegistry) -> Callable[[str, int], None]:
    """`gatewatch_proxy_spans{outcome}` on `registry`, and the tracer's hook that counts into it:
    spans exported, failed (their batch was given up) or dropped (the export queue was full)."""
    spans = Counter(
        "gatewatch_proxy_spans", "Finished spans by export outcome: exported, failed, dropped", ["outcome"],
        registry=registry,
    )
    children = {outcome: spans.labels(outcome) for outcome in ("exported", "failed", "dropped")}
    return lambda outcome, count: children[outcome].inc(count)


class GatewayMetrics(CounterCache):
    """gatewatch_gateway_* metrics; label children are cached so the hot path is a dict lookup."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry
        self.requests = Counter(
            "gatewatch_gateway_requests", "Requests answered", ["route", "method", "code"], registry=registry,
        )
        self.duration = Histogram(
            "gatewatch_gateway_request_duration_seconds", "Time to the end of the response", ["route"],
            registry=registry, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.ratelimit = Counter(
            "gatewatch_gateway_ratelimit", "Rate-limit outcomes", ["outcome"], registry=registry,
        )
        self.auth = Counter("gatewatch_gateway_auth", "Authentication outcomes", ["outcome"], registry=registry)
        self.decision_effects = Counter(
            "gatewatch_gateway_decision_effects", "Requests a control-plane decision acted on",
            ["kind", "effect"], registry=registry,
        )
        self.decisions_active = Gauge(  # with worker processes: the highest of the live workers'
            "gatewatch_gateway_decisions_active", "Decisions currently in force", registry=registry,
            multiprocess_mode="livemax",
        )
        self.rejected = Counter(
            "gatewatch_proxy_rejected_requests", "Requests refused before routing (malformed, too large, slow)",
            ["code"], registry=registry,
        )
        self.shed = Counter(
            "gatewatch_gateway_shed", "Requests/connections refused with 503 by admission control",
            ["reason"], registry=registry,
        )
        self.reloads = Counter(
            "gatewatch_gateway_config_reloads", "Config reload attempts", ["result"], registry=registry,
        )
        self.span_outcome = span_outcomes(registry)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, exchange: Exchange, status: int, seconds: float) -> None:
        """Count one finished request."""
        route = exchange.route.name if exchange.route is not None else ""
        key = (route, exchange.request.method, status)
        children = self._children.get(key)
        if children is None:
            if len(self._children) > 10_000:  # unknown methods could grow this without bound
                self._children.clear()
            children = (self.requests.labels(route, key[1], str(status)), self.duration.labels(route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsPolicy:
    """Outermost policy: times each exchange and counts it when the response is written."""

    name = "metrics"

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        started = time.perf_counter()
        exchange.on_complete(lambda done, status: self.metrics.observe(done, status, time.perf_counter() - started))
        return await call_next(exchange)
