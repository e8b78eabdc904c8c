"""Coarse timeouts for awaited futures and callbacks: one sweep timer per loop instead of a loop
timer per wait.

Every upstream exchange waits with a timeout (route timeout, deadline); `loop.call_later` plus
`cancel` per wait was one of the larger fixed costs of a proxied request. Here a wait registers its
deadline in a dict and one timer, armed only while something waits, expires the due ones every
`tick_s`. A timeout therefore fires up to `tick_s` late; waits shorter than `precise_below_s` keep
a timer of their own so short timeouts stay accurate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

ErrorFactory = Callable[[], BaseException]
Expiry = Callable[[], None]


class Deadlines:
    """Calls back, or fails awaited futures, past their deadline, checked every `tick_s` by one timer."""

    def __init__(self, tick_s: float = 0.01, precise_below_s: float = 0.1) -> None:
        self.tick_s = tick_s
        self.precise_below_s = precise_below_s
        self._waiting: dict[object, tuple[float, Expiry]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, key: object, timeout_s: float,
              on_expire: Expiry) -> asyncio.TimerHandle | None:
        """Call `on_expire()` after `timeout_s` (+ up to one tick) unless `unwatch(key, handle)` comes
        first; the handle it returns is the short timeout's own timer (None for a swept one)."""
        if timeout_s < self.precise_below_s:
            return loop.call_later(timeout_s, on_expire)
        if loop is not self._loop:  # first use, or this object moved to another loop (tests)
            self._loop, self._timer = loop, None
            self._waiting.clear()
        self._waiting[key] = (loop.time() + timeout_s, on_expire)
        if self._timer is None:
            self._timer = loop.call_later(self.tick_s, self._sweep)
        return None

    def unwatch(self, key: object, handle: asyncio.TimerHandle | None) -> None:
        """Forget a watch that `watch(…, key, …)` made and that returned `handle`."""
        if handle is not None:
            handle.cancel()
        else:
            self._waiting.pop(key, None)

    async def wait(self, future: asyncio.Future[None], timeout_s: float, error: ErrorFactory) -> None:
        """Await `future`; it fails with `error()` if not done within `timeout_s` (+ up to one tick)."""

        def expire() -> None:
            if not future.done():
                future.set_exception(error())

        # future.get_loop(), not asyncio.get_running_loop(): that costs a getpid() system call
        handle = self.watch(future.get_loop(), future, timeout_s, expire)
        try:
            await future
        finally:
            self.unwatch(future, handle)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        expired = [(key, on_expire) for key, (deadline, on_expire) in self._waiting.items() if deadline <= now]
        try:
            for key, on_expire in expired:
                del self._waiting[key]
                on_expire()
        finally:  # one failing callback must not end the sweeps of the others
            self._timer = loop.call_later(self.tick_s, self._sweep) if self._waiting else None

    def __len__(self) -> int:
        return len(self._waiting)
