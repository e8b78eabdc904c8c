"""Sidecars in front of real local services: routing, breaker trips and recovery, forced decisions,
budgeted retries under a total outage, deadlines (plain HTTP; mTLS is in test_sidecar_mtls.py)."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest

from gatewatch.decisions import Decision, DecisionKind, Reason, Scope, Target
from gatewatch.settings import Settings
from proxy.decisionstore import DecisionStore
from tests.test_sidecar_support import running_backend, running_sidecar

pytestmark = pytest.mark.timeout(60)


def call(port: int, service: str, method: str = "GET", path: str = "/x", **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", headers={"host": service}, timeout=10,
                         **kwargs)  # type: ignore[arg-type]


def test_outbound_by_host_through_callee_sidecar_to_local_service(settings: Settings) -> None:
    with (
        running_backend() as payment,
        running_sidecar("payment", payment.port, settings) as payment_sidecar,
        running_sidecar("checkout", 1, settings, {"payment": [payment_sidecar.inbound_port]}) as checkout,
    ):
        response = call(checkout.outbound_port, "payment:8080", path="/pay?x=1")
        assert response.status_code == 200 and response.text == "hello from backend"
        assert payment.seen[-1]["x-gatewatch-caller"] == "checkout"
        assert payment.seen[-1]["host"] == "payment:8080"
        # As an HTTP proxy: absolute-form request target, the Host names the callee.
        proxied = httpx.get("http://payment/pay", proxy=f"http://127.0.0.1:{checkout.outbound_port}", timeout=10)
        assert proxied.status_code == 200
        unknown = call(checkout.outbound_port, "inventory")
        assert unknown.status_code == 404 and "payment" in unknown.json()["message"]


def test_breaker_trips_within_configured_failures_and_recovers_through_half_open(settings: Settings) -> None:
    breaker = {"consecutive_failures": 3, "base_open_s": 0.4, "jitter": 0.0, "min_requests": 100}
    with (
        running_backend(status=500) as payment,
        running_sidecar("checkout", 1, settings, {"payment": [payment.port]}, config={"breaker": breaker}) as sidecar,
    ):
        statuses = [call(sidecar.outbound_port, "payment").status_code for _ in range(3)]
        assert statuses == [500, 500, 500] and payment.hits == 3
        tripped = call(sidecar.outbound_port, "payment")
        assert tripped.status_code == 503 and payment.hits == 3  # failed fast, upstream not called
        assert tripped.headers["x-gatewatch-breaker"] == "checkout->payment"
        assert int(tripped.headers["retry-after"]) >= 1
        assert tripped.json()["error"] == "circuit_open"
        # Half-open probe fails: open again (for longer), still without extra upstream load.
        time.sleep(0.45)
        assert call(sidecar.outbound_port, "payment").status_code == 500 and payment.hits == 4
        assert call(sidecar.outbound_port, "payment").status_code == 503 and payment.hits == 4
        # The service recovers; after the (doubled) backoff a probe succeeds and closes the circuit.
        payment.status = 200
        time.sleep(0.85)
        assert [call(sidecar.outbound_port, "payment").status_code for _ in range(3)] == [200, 200, 200]
        assert payment.hits == 7


def test_forced_decision_opens_circuit_until_it_expires(settings: Settings) -> None:
    store = DecisionStore()
    with (
        running_backend() as payment,
        running_sidecar("checkout", 1, settings, {"payment": [payment.port]}, decisions=store) as sidecar,
    ):
        assert call(sidecar.outbound_port, "payment").status_code == 200
        decision = Decision.new(DecisionKind.CIRCUIT_OPEN, Target(scope=Scope.EDGE, key="checkout->payment"),
                                Reason(detector="failure_spike", score=0.9), ttl=timedelta(seconds=1.5))
        other = Decision.new(DecisionKind.CIRCUIT_OPEN, Target(scope=Scope.EDGE, key="orders->payment"),
                             Reason(detector="failure_spike"), ttl=timedelta(seconds=60))
        store.replace([decision, other], version=1)
        time.sleep(0.1)  # applied on the sidecar's loop
        forced = call(sidecar.outbound_port, "payment")
        assert forced.status_code == 503 and forced.headers["x-gatewatch-breaker"] == "checkout->payment"
        hits = payment.hits
        deadline = time.monotonic() + 5
        while call(sidecar.outbound_port, "payment").status_code == 503:
            assert time.monotonic() < deadline, "forced open never expired"
            time.sleep(0.1)
        assert payment.hits == hits + 1
        assert time.monotonic() - (deadline - 5) > 1.0  # stayed open until about its expiry


def test_forced_close_overrides_tripped_breaker_and_withdrawal_restores_it(settings: Settings) -> None:
    store = DecisionStore()
    breaker = {"consecutive_failures": 1, "base_open_s": 60, "jitter": 0.0}
    with (
        running_backend(status=500) as payment,
        running_sidecar("checkout", 1, settings, {"payment": [payment.port]}, decisions=store,
                        config={"breaker": breaker, "retry": {"max_retries": 0}}) as sidecar,
    ):
        call(sidecar.outbound_port, "payment")
        assert call(sidecar.outbound_port, "payment").status_code == 503
        close = Decision.new(DecisionKind.CIRCUIT_CLOSE, Target(scope=Scope.EDGE, key="checkout->payment"),
                             Reason(detector="operator"), ttl=timedelta(seconds=60))
        store.replace([close], version=1)
        time.sleep(0.1)
        assert call(sidecar.outbound_port, "payment").status_code == 500  # let through despite failures
        store.replace([], version=2)
        time.sleep(0.1)
        assert call(sidecar.outbound_port, "payment").status_code == 503


def test_retries_respect_budget_under_total_outage(settings: Settings) -> None:
    retry = {"max_retries": 3, "backoff_base_s": 0.001, "backoff_max_s": 0.002, "budget_min_per_s": 2.0}
    never_trip = {"consecutive_failures": 10_000, "min_requests": 10_000}
    with (
        running_backend(status=503) as payment,
        running_sidecar("checkout", 1, settings, {"payment": [payment.port]},
                        config={"retry": retry, "breaker": never_trip}) as sidecar,
    ):
        first = call(sidecar.outbound_port, "payment")
        assert first.status_code == 503 and payment.hits == 3  # 1 try + 2 retries the minimum budget allows
        started = time.monotonic()
        requests = 30
        for _ in range(requests):
            assert call(sidecar.outbound_port, "payment").status_code == 503
        elapsed = time.monotonic() - started
        retries = payment.hits - 3 - requests
        # Without a budget: 3 retries each (90). With it: ~2 per second of outage, plus rounding.
        assert retries <= 2 * elapsed + 2, (retries, elapsed)
        # POST is not idempotent: never retried.
        before = payment.hits
        time.sleep(1.0)  # budget refills
        assert call(sidecar.outbound_port, "payment", method="POST", content=b"{}").status_code == 503
        assert payment.hits == before + 1


def test_retry_recovers_from_one_failing_endpoint(settings: Settings) -> None:
    with (
        running_backend(status=503) as bad,
        running_backend() as good,
        running_sidecar("checkout", 1, settings, {"payment": [bad.port, good.port]},
                        config={"retry": {"budget_min_per_s": 50}, "breaker": {"base_open_s": 60}}) as sidecar,
    ):
        results = [call(sidecar.outbound_port, "payment", method="PUT", content=b"body").status_code
                   for _ in range(20)]
        assert results == [200] * 20  # each failed try was retried on the healthy endpoint
        assert bad.hits == 7  # then ejected after its consecutive failures (default 7)
        assert good.seen[-1]["content-length"] == "4"  # the buffered body was replayed


def test_deadline_gives_504(settings: Settings) -> None:
    retry = {"per_try_timeout_s": 0.3, "deadline_s": 0.5, "max_retries": 5, "backoff_base_s": 0.01}
    with (
        running_backend(delay_s=1.5) as payment,
        running_sidecar("checkout", 1, settings, {"payment": [payment.port]}, config={"retry": retry}) as sidecar,
    ):
        started = time.monotonic()
        response = call(sidecar.outbound_port, "payment")
        assert response.status_code == 504 and response.json()["error"] == "upstream_timeout"
        assert time.monotonic() - started < 1.4  # did not wait for the slow upstream
        assert payment.hits <= 2  # a second try fits in the deadline, a third does not


def test_connect_error_is_502_and_retried(settings: Settings) -> None:
    with running_sidecar("checkout", 1, settings, {"payment": [1]}) as sidecar:
        response = call(sidecar.outbound_port, "payment")
        assert response.status_code == 502
