"""A service's own asyncio event loop (uvloop when available) on a daemon thread.

Asyncio services (gateway, sidecars) run this way so that embedded mode can host them beside
blocking stages in one process: `start()` returns once the startup coroutine has bound the
listeners, `stop()` drains through the shutdown coroutine and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from gatewatch.errors import GatewatchError

T = TypeVar("T")
Startup = Callable[[], Coroutine[Any, Any, None]]
Shutdown = Callable[[float], Awaitable[None]]  # gets the drain timeout in seconds


async def _nothing() -> None:
    """Startup of a loop that only runs what is handed to it."""


async def _drained(drain_s: float) -> None:
    """Shutdown with nothing of its own to drain (background tasks are cancelled anyway)."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where uvloop is installed (Linux, macOS), else the standard one."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """Runs `startup` on a fresh loop thread at start, `shutdown` at stop (or after a failed start);
    without them, a plain loop thread for coroutines handed to `run`/`spawn`."""

    def __init__(self, name: str, startup: Startup | None = None, shutdown: Shutdown | None = None) -> None:
        self.name = name
        self._startup = startup or _nothing
        self._shutdown = shutdown or _drained
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the thread and run the startup coroutine; GatewatchError if it fails or times out."""
        loop = self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,), name=self.name, daemon=True)
        self._thread.start()
        try:
            self.run(self._startup(), timeout_s)
        except Exception as exc:
            self.stop(drain_s=1.0)  # close whatever the startup had opened
            if isinstance(exc, GatewatchError):
                raise
            reason = f"not ready within {timeout_s:g}s" if isinstance(exc, TimeoutError) else str(exc)
            raise GatewatchError(f"{self.name} could not start: {reason}") from None

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = 30.0) -> T:
        """Run `coro` on the loop from another thread and wait for its result."""
        assert self.loop is not None, "not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call_soon(self, func: Callable[..., Any], *args: Any) -> None:
        """Call `func(*args)` on the loop (thread-safe); dropped once the loop is gone."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed between the check and the call
                loop.call_soon_threadsafe(func, *args)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a background task (thread-safe); such tasks are cancelled first at stop."""
        loop = self.loop
        if loop is None or loop.is_closed():
            coro.close()
            return
        self.call_soon(self._create_task, coro)

    def _create_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self, drain_s: float = 10.0, grace_s: float = 5.0) -> None:
        """Cancel background tasks, run the shutdown coroutine (it drains up to `drain_s`), cancel
        what is left, stop the loop and join the thread (waiting up to `drain_s + grace_s`)."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):  # a failing shutdown must not keep the thread alive
                self.run(self._stopping(drain_s), drain_s + grace_s)
            self.call_soon(loop.stop)
        thread.join(drain_s + grace_s)
        self.loop = self._thread = None

    async def _stopping(self, drain_s: float) -> None:
        for task in list(self._tasks):
            task.cancel()
        try:
            await self._shutdown(drain_s)
        finally:
            current = asyncio.current_task()
            leftovers = [task for task in asyncio.all_tasks() if task is not current]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()
