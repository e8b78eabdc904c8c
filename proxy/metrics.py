"""Prometheus metrics of the gateway, on a registry of its own (one per GatewayService)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy.policy import CallNext, Exchange, Response

_perf_counter: Final = time.perf_counter


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


class PendingCounts:
    """Per-request counts and observations kept in plain dicts on the event loop, added to their
    prometheus_client children by `flush()` (every second, before each scrape, at shutdown).

    Each prometheus inc or observe takes a lock, and with worker processes writes an mmap'd file:
    ~1.4 us each, five per request, which was ~14 us of a `workers: 2` gateway's request. Totals
    are unchanged; a scrape answered by another worker can be up to one flush interval behind.
    """

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}
        self._observed: dict[Any, tuple[list[int], list[float], list[float]]] = {}

    def inc(self, child: Any, amount: float = 1) -> None:
        """Add `amount` to a counter child (a `Counter.labels(...)` result)."""
        counts = self._counts
        counts[child] = counts.get(child, 0) + amount

    def observe(self, child: Any, value: float) -> None:
        """Record one observation of a histogram child."""
        pending = self._observed.get(child)
        if pending is None:  # the bounds are kept too: reading them off the child is a generic lookup
            pending = self._observed[child] = ([0] * len(child._upper_bounds), [0.0], child._upper_bounds)
        # The bucket Histogram.observe would pick: the first upper bound >= value (the last is +Inf).
        pending[0][bisect_left(pending[2], value)] += 1
        pending[1][0] += value

    def flush(self) -> None:
        """Add everything pending to the prometheus children."""
        counts, self._counts = self._counts, {}
        for child, amount in counts.items():
            child.inc(amount)
        observed, self._observed = self._observed, {}
        for child, (buckets, total, _) in observed.items():
            # prometheus_client has no bulk observe: these are the values Histogram.observe adds to.
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)
            child._sum.inc(total[0])


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
        self.pending = PendingCounts()  # the per-request counts, flushed by the gateway service
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
        pending = self.pending
        pending.inc(children[0])
        pending.observe(children[1], seconds)


class MetricsPolicy:
    """Outermost policy: times each exchange and counts it when the response is written."""

    name = "metrics"

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def handle(self, exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        started = _perf_counter()
        exchange.on_complete(lambda done, status: self.metrics.observe(done, status, _perf_counter() - started))
        return call_next(exchange)  # unawaited: no frame of ours while the request is upstream
