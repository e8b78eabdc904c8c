"""The gateway's buffered per-request counting: what reaches prometheus_client after a flush is what
counting each request there directly would have recorded."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from proxy.metrics import PendingCounts

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() for sample in family.samples if not sample.name.endswith("_created")}


def _families(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    return (Counter("requests", "r", ["code"], registry=registry),
            Histogram("duration_seconds", "d", ["route"], registry=registry, buckets=BUCKETS))


def test_flushed_counts_and_observations_equal_direct_ones() -> None:
    direct, buffered = CollectorRegistry(), CollectorRegistry()
    (counter, histogram), (counter2, histogram2) = _families(direct), _families(buffered)
    pending = PendingCounts()
    rng = random.Random(3)
    # bucket bounds themselves included: `le` is inclusive, and +Inf takes the rest
    values = [*BUCKETS, 0.0, 5.0, *(rng.expovariate(300) for _ in range(2000))]
    for n, value in enumerate(values):
        code, route = ("200", "429")[n % 2], ("a", "b", "c")[n % 3]
        counter.labels(code).inc()
        histogram.labels(route).observe(value)
        pending.inc(counter2.labels(code))
        pending.observe(histogram2.labels(route), value)
        if n == 1000:
            pending.flush()  # flushes in the middle add up too
    assert _samples(buffered) != _samples(direct)  # the rest is still pending
    pending.flush()
    assert _samples(buffered) == pytest.approx(_samples(direct))  # sums: the same values added in another order
    pending.flush()  # nothing pending: nothing added twice
    assert _samples(buffered) == pytest.approx(_samples(direct))
