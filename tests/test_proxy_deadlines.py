"""Coarse deadlines: one sweep timer fails expired waits; short timeouts keep a precise timer."""

from __future__ import annotations

import asyncio

import pytest

from proxy.deadlines import Deadlines


class Late(Exception):
    pass


def test_a_wait_past_its_deadline_fails_within_a_tick() -> None:
    async def scenario() -> tuple[float, int]:
        deadlines = Deadlines(tick_s=0.01, precise_below_s=0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Late):
            await deadlines.wait(loop.create_future(), 0.1, Late)
        return loop.time() - started, len(deadlines)

    waited, left = asyncio.run(scenario())
    assert waited >= 0.1
    assert left == 0


def test_a_wait_that_completes_in_time_leaves_nothing_behind() -> None:
    async def scenario() -> tuple[int, object]:
        deadlines = Deadlines(tick_s=0.01, precise_below_s=0.0)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_later(0.02, future.set_result, None)
        await deadlines.wait(future, 5.0, Late)
        await asyncio.sleep(0.03)  # the sweep timer stops once nothing waits
        return len(deadlines), deadlines._timer

    assert asyncio.run(scenario()) == (0, None)


def test_short_timeouts_use_their_own_timer() -> None:
    async def scenario() -> int:
        deadlines = Deadlines(tick_s=10.0, precise_below_s=0.1)  # a sweep would come far too late
        loop = asyncio.get_running_loop()
        with pytest.raises(Late):
            await deadlines.wait(loop.create_future(), 0.01, Late)
        return len(deadlines)

    assert asyncio.run(scenario()) == 0


def test_only_expired_waits_fail_and_the_object_survives_a_new_loop() -> None:
    deadlines = Deadlines(tick_s=0.01, precise_below_s=0.0)

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        short, long = loop.create_future(), loop.create_future()
        loop.call_later(0.15, long.set_result, None)
        results = await asyncio.gather(
            deadlines.wait(short, 0.05, Late), deadlines.wait(long, 1.0, Late), return_exceptions=True,
        )
        return [type(result).__name__ for result in results]

    assert asyncio.run(scenario()) == ["Late", "NoneType"]
    assert asyncio.run(scenario()) == ["Late", "NoneType"]  # a second loop (pools outlive loops in tests)
