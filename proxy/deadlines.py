"""Coarse timeouts for awaited futures: one sweep timer per loop instead of a loop timer per await.

Every upstream exchange waits with a timeout (route timeout, deadline); `loop.call_later` plus
`cancel` per wait was one of the larger fixed costs of a proxied request. Here a wait registers its
deadline in a dict and one timer, armed only while something waits, fails the expired ones every
`tick_s`. A timeout therefore fires up to `tick_s` late; waits shorter than `precise_below_s` keep
a timer of their own so short timeouts stay accurate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

ErrorFactory = Callable[[], BaseException]


class Deadlines:
    """Fails awaited futures whose deadline passed, checked every `tick_s` by a single timer."""

    def __init__(self, tick_s: float = 0.01, precise_below_s: float = 0.1) -> None:
        self.tick_s = tick_s
        self.precise_below_s = precise_below_s
        self._waiting: dict[asyncio.Future[None], tuple[float, ErrorFactory]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def wait(self, future: asyncio.Future[None], timeout_s: float, error: ErrorFactory) -> None:
        """Await `future`; it fails with `error()` if not done within `timeout_s` (+ up to one tick)."""
        loop = future.get_loop()  # not asyncio.get_running_loop(): that costs a getpid() system call
        if timeout_s < self.precise_below_s:
            await _wait_precise(loop, future, timeout_s, error)
            return
        if loop is not self._loop:  # first use, or this object moved to another loop (tests)
            self._loop, self._timer = loop, None
            self._waiting.clear()
        self._waiting[future] = (loop.time() + timeout_s, error)
        if self._timer is None:
            self._timer = loop.call_later(self.tick_s, self._sweep)
        try:
            await future
        finally:
            self._waiting.pop(future, None)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        expired = [(future, error) for future, (deadline, error) in self._waiting.items() if deadline <= now]
        for future, error in expired:
            del self._waiting[future]
            if not future.done():
                future.set_exception(error())
        self._timer = loop.call_later(self.tick_s, self._sweep) if self._waiting else None

    def __len__(self) -> int:
        return len(self._waiting)


async def _wait_precise(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], timeout_s: float, error: ErrorFactory,
) -> None:
    """A timer of its own for short timeouts (cheaper than wait_for: no extra task)."""

    def expire() -> None:
        if not future.done():
            future.set_exception(error())

    handle = loop.call_later(timeout_s, expire)
    try:
        await future
    finally:
        handle.cancel()
