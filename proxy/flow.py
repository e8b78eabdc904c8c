"""Write-side flow control shared by the listener's and the upstream pool's protocols."""

from __future__ import annotations

import asyncio


class WriteFlow(asyncio.Protocol):
    """Tracks the transport's pause/resume_writing so a writer can wait until the buffer drains."""

    write_paused = False
    drain_waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_ended(self) -> bool:
        """True once the connection is closing (a paused writer then stops waiting)."""
        raise NotImplementedError

    async def wait_writable(self) -> None:
        """Return when the write buffer is below its high-water mark or the connection ended."""
        while self.write_paused and not self.connection_ended():
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter
