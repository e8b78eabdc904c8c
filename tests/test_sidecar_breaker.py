"""Circuit breaker state machine: trips, half-open probing with backoff, forced states, ejection."""

from __future__ import annotations

import random

import pytest

from proxy.breaker import BreakerConfig, BreakerState, CircuitBreaker, EndpointSet, SlidingWindow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, **config: float) -> CircuitBreaker:
    cfg = BreakerConfig(**{"jitter": 0.0, **config})  # type: ignore[arg-type]
    return CircuitBreaker("payment", cfg, clock, random.Random(1))


def test_trips_after_consecutive_failures_default_seven() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(6):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_success_resets_consecutive_count() -> None:
    clock = FakeClock()
    breaker = make(clock, min_requests=1000)
    for _ in range(20):
        for _ in range(6):
            breaker.record(False)
        breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


def test_failure_rate_trips_only_above_minimum_volume() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=100, failure_rate=0.5, min_requests=10)
    for _ in range(4):  # 8 requests, 50% failures: below the minimum volume
        breaker.record(True)
        breaker.record(False)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(True)
    breaker.record(False)  # 10 requests, 5 failures: trips
    assert breaker.state is BreakerState.OPEN


def test_window_forgets_old_outcomes() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=100, failure_rate=0.5, min_requests=20, window_s=10)
    for _ in range(9):
        breaker.record(False)
        breaker.record(True)
    clock.now += 11  # all of that fell out of the window
    breaker.record(False)
    breaker.record(False)
    assert breaker.state is BreakerState.CLOSED


def test_sliding_window_counts() -> None:
    clock = FakeClock()
    window = SlidingWindow(10.0, clock)
    window.record(True)
    clock.now += 5
    window.record(False)
    assert window.counts() == (2, 1)
    clock.now += 6
    assert window.counts() == (1, 0)


def test_half_open_probe_success_closes() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=1, base_open_s=2)
    breaker.record(False)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after_s() == pytest.approx(2)
    clock.now += 2
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_failures_back_off_exponentially_with_cap() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=1, base_open_s=1, max_open_s=5)
    breaker.record(False)
    waits = []
    for _ in range(5):
        waits.append(round(breaker.retry_after_s(), 6))
        clock.now += breaker.retry_after_s()
        assert breaker.allow()
        breaker.record(False)
    assert waits == [1, 2, 4, 5, 5]


def test_jitter_spreads_reopen_times() -> None:
    cfg = BreakerConfig(base_open_s=10, jitter=0.2)
    rng = random.Random(7)
    waits = {round(cfg.open_for(1, rng), 3) for _ in range(20)}
    assert len(waits) > 10
    assert all(8 <= wait <= 12 for wait in waits)


def test_forced_open_fails_fast_until_expiry_then_restores() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.force(BreakerState.OPEN, until=clock.now + 30)
    assert breaker.state is BreakerState.OPEN and breaker.forced
    assert not breaker.allow()
    assert breaker.retry_after_s() == pytest.approx(30)
    clock.now += 30
    assert breaker.state is BreakerState.CLOSED and not breaker.forced
    assert breaker.allow()


def test_forced_close_overrides_tripped_breaker() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=1, base_open_s=100)
    breaker.record(False)
    breaker.force(BreakerState.CLOSED, until=clock.now + 10)
    assert breaker.allow()
    breaker.record(False)  # ignored while forced
    assert breaker.state is BreakerState.CLOSED
    clock.now += 10
    assert breaker.state is BreakerState.OPEN  # back to its own state
    breaker.unforce()


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(consecutive_failures=0)
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate=1.5)
    with pytest.raises(TypeError):
        BreakerConfig(bogus=1)  # type: ignore[call-arg]


def test_endpoint_ejection_and_round_robin() -> None:
    clock = FakeClock()
    cfg = BreakerConfig(consecutive_failures=2, base_open_s=5, jitter=0)
    endpoints = EndpointSet("payment", ["a:1", "b:2"], cfg, clock)
    picked = [endpoints.pick() for _ in range(4)]
    assert [p[0] for p in picked if p] == ["a:1", "b:2", "a:1", "b:2"]
    for _ in range(2):
        chosen = endpoints.pick(exclude=["b:2"])
        assert chosen is not None and chosen[0] == "a:1"
        chosen[1].record(False)
    assert endpoints.ejected() == ["a:1"]
    assert all((p := endpoints.pick()) is not None and p[0] == "b:2" for _ in range(3))
    # A retry that already hit b:2 still gets it back when it is the only healthy endpoint.
    again = endpoints.pick(exclude=["b:2"])
    assert again is not None and again[0] == "b:2"
    clock.now += 5
    probe = endpoints.pick(exclude=["b:2"])
    assert probe is not None and probe[0] == "a:1"  # half-open probe


def test_all_endpoints_ejected_gives_none() -> None:
    clock = FakeClock()
    cfg = BreakerConfig(consecutive_failures=1, jitter=0)
    endpoints = EndpointSet("payment", ["a:1"], cfg, clock)
    chosen = endpoints.pick()
    assert chosen is not None
    chosen[1].record(False)
    assert endpoints.pick() is None


def test_released_probe_frees_half_open_slot() -> None:
    clock = FakeClock()
    breaker = make(clock, consecutive_failures=1, base_open_s=1)
    breaker.record(False)
    clock.now += 1
    assert breaker.allow()
    breaker.release()  # the probe's client went away: no verdict
    assert breaker.allow()
