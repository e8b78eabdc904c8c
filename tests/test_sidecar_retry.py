"""Retry helpers: idempotent methods, full-jitter backoff, the retry budget, deadlines."""

from __future__ import annotations

import random

import pytest

from proxy.retry import Deadline, RetryBudget, RetryConfig, backoff_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_only_idempotent_methods_by_default() -> None:
    cfg = RetryConfig()
    assert cfg.may_retry_method("GET") and cfg.may_retry_method("put") and cfg.may_retry_method("DELETE")
    assert not cfg.may_retry_method("POST") and not cfg.may_retry_method("PATCH")
    assert RetryConfig(methods=frozenset({"post"})).may_retry_method("POST")


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        RetryConfig(max_retries=-1)
    with pytest.raises(ValueError):
        RetryConfig(budget_ratio=2)


def test_backoff_is_bounded_full_jitter() -> None:
    rng = random.Random(3)
    for attempt in range(1, 8):
        ceiling = min(0.25, 0.025 * 2 ** (attempt - 1))
        samples = [backoff_s(attempt, 0.025, 0.25, rng) for _ in range(50)]
        assert all(0 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 40


def test_budget_ratio_of_active_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=0, clock=clock)
    for _ in range(10):
        budget.request_started()
    granted = sum(budget.try_acquire_retry() for _ in range(10))
    assert granted == 2  # 20% of 10 active requests
    budget.retry_finished()
    assert budget.try_acquire_retry()
    assert not budget.try_acquire_retry()


def test_budget_minimum_rate_when_idle() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=3, clock=clock)
    budget.request_started()
    granted = 0
    for _ in range(100):  # a tight loop of retries within the same instant
        if budget.try_acquire_retry():
            granted += 1
            budget.retry_finished()
    assert granted == 3
    clock.now += 1.0
    later = 0
    for _ in range(100):
        if budget.try_acquire_retry():
            later += 1
            budget.retry_finished()
    assert later == 3


def test_budget_counts_never_go_negative() -> None:
    budget = RetryBudget()
    budget.request_finished()
    budget.retry_finished()
    assert budget.active_requests == 0 and budget.active_retries == 0


def test_deadline_cuts_per_try_timeout() -> None:
    clock = FakeClock()
    deadline = Deadline(1.0, clock)
    assert deadline.try_timeout_s(0.3) == pytest.approx(0.3)
    clock.now += 0.8
    assert deadline.try_timeout_s(0.3) == pytest.approx(0.2)
    assert not deadline.expired
    clock.now += 0.5
    assert deadline.expired and deadline.remaining_s() == 0.0
