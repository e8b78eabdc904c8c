"""Outbound retry/deadline policy: picks a healthy endpoint per try, retries bounded and budgeted.

* The whole exchange has a deadline (`deadline_s`, 504 when it passes); each try gets
  min(`per_try_timeout_s`, what is left) to its first response byte.
* Retries happen only for idempotent methods (configurable), only on connect errors, per-try
  timeouts and 502/503/504, only while the body is replayable, at most `max_retries` times, with
  full-jitter backoff, and only while the callee's retry budget admits them.
* Every try's outcome feeds that endpoint's breaker, so failing endpoints are ejected.
"""

from __future__ import annotations

import asyncio
import random
from typing import Final

from proxy.bodies import BodyTooLarge, close_body
from proxy.circuit import open_response
from proxy.policy import CallNext, Exchange, Response, UpstreamConnectError, UpstreamTimeout
from proxy.retry import backoff_s
from proxy.sidecar_registry import Upstream

RESEND_ATTRIBUTE: Final = "http.request.resend_count"


class RetryPolicy:
    """Sends the exchange to the callee with per-try timeouts, a deadline and budgeted retries."""

    name = "retry"

    def __init__(self, max_body_bytes: int, rng: random.Random | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self._rng = rng or random.Random()

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        upstream: Upstream = exchange.state["upstream"]
        config = upstream.retry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.deadline_s
        exchange.deadline = deadline if exchange.deadline is None else min(exchange.deadline, deadline)
        retriable = config.max_retries > 0 and config.may_retry_method(exchange.request.method)
        retriable = retriable and await self._replayable(exchange)
        upstream.budget.request_started()
        try:
            return await self._attempts(exchange, call_next, upstream, retriable)
        finally:
            upstream.budget.request_finished()

    async def _attempts(self, exchange: Exchange, call_next: CallNext, upstream: Upstream, retriable: bool) -> Response:
        config = upstream.retry
        tried: list[str] = []
        attempt = 0
        while True:
            picked = upstream.endpoints.pick(exclude=tried)
            if picked is None:
                if not upstream.breaker.forced:
                    return open_response(upstream, f"every endpoint of {upstream.name} is ejected")
                picked = upstream.endpoints.panic_pick()  # a forced close means: send traffic anyway
            address, endpoint_breaker = picked
            tried.append(address)
            exchange.endpoint = upstream.by_address[address]
            exchange.timeout_s = config.per_try_timeout_s
            if attempt:
                exchange.request.fresh_body()
            error: UpstreamConnectError | UpstreamTimeout | None = None
            response: Response | None = None
            try:
                response = await call_next(exchange)
            except (UpstreamConnectError, UpstreamTimeout) as exc:
                error = exc
            except BaseException:
                endpoint_breaker.release()
                raise
            failed = error is not None or (response is not None and response.status >= 500)
            endpoint_breaker.record(not failed)
            if attempt:
                upstream.budget.retry_finished()
            retry = error is not None or (response is not None and response.status in config.statuses)
            wait = backoff_s(attempt + 1, config.backoff_base_s, config.backoff_max_s, self._rng)
            if not (retry and retriable and attempt < config.max_retries and _fits(exchange, wait)):
                return _finish(response, error)
            if not upstream.budget.try_acquire_retry():
                exchange.set_attribute("gatewatch.retry.budget_exhausted", True)
                return _finish(response, error)
            if response is not None:
                await close_body(response.body)  # a failed try's streamed body: closes its connection
            attempt += 1
            exchange.set_attribute(RESEND_ATTRIBUTE, attempt)
            await asyncio.sleep(wait)

    async def _replayable(self, exchange: Exchange) -> bool:
        """Buffer a small body so it can be sent again; large or streamed bodies are not retried."""
        request = exchange.request
        if request.replayable:
            return True
        if request.content_length is None or request.content_length > self.max_body_bytes:
            return False
        try:
            await request.buffer_body(self.max_body_bytes)
        except BodyTooLarge:
            return False
        return True


def _fits(exchange: Exchange, wait_s: float) -> bool:
    """Whether a retry after `wait_s` would still start before the deadline."""
    assert exchange.deadline is not None
    return asyncio.get_running_loop().time() + wait_s < exchange.deadline


def _finish(response: Response | None, error: UpstreamConnectError | UpstreamTimeout | None) -> Response:
    if response is not None:
        return response
    assert error is not None
    raise error

