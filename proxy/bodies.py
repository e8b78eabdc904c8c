"""Message bodies as async iterators of chunks: empty, replayed, size-limited, and an upstream
response read off its pooled connection.

Most are async generators, which mypyc does not compile: they live here, outside
`proxy.compiled.COMPILED_MODULES`, and the compiled modules call them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.upstream import ConnectionPool, _UpstreamProtocol

Body = AsyncIterable[bytes]


class BodyTooLarge(Exception):
    """A body exceeded the limit given to `Request.buffer_body` (the server answers 413)."""


class _EmptyBody:
    """A body without chunks. Stateless, so one serves every bodiless request (an async generator
    a request was ~0.4% of the gateway's CPU)."""

    def __aiter__(self) -> _EmptyBody:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


EMPTY_BODY: Body = _EmptyBody()


async def replayed(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """A buffered body, readable again."""
    for chunk in chunks:
        yield chunk


async def limit_body(body: Body, limit: int) -> AsyncIterator[bytes]:
    """Pass a body through, raising BodyTooLarge once more than `limit` bytes went by (chunked uploads)."""
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
        yield chunk


class UpstreamBody:
    """An upstream response's body read off its pooled connection: the connection goes back to the
    pool once the body was read to the end, and is closed when the body is closed before that.

    A class rather than an async generator: closing a generator that never started skips its
    `finally`, so a streamed answer nobody began to read (a retry's dropped try, an answer whose
    policy gave up) kept its connection until the upstream closed it.
    """

    def __init__(self, pool: ConnectionPool, conn: _UpstreamProtocol, wait_s: float | None) -> None:
        self._pool = pool
        self._conn: _UpstreamProtocol | None = conn
        self._wait_s = wait_s

    def __aiter__(self) -> UpstreamBody:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        try:
            chunk = await conn.next_chunk(self._wait_s)
        except BaseException:
            await self.aclose()  # mid-message: the connection cannot carry another request
            raise
        if chunk is None:
            self._conn = None
            self._pool.release(conn)
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Give up the rest of the body: its connection, left mid-message, is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.discard(conn)


async def close_body(body: Body | bytes) -> None:
    """Close a streamed body that will not be read (to its end): an upstream's gives up its connection."""
    if not isinstance(body, bytes):
        closer = getattr(body, "aclose", None)
        if closer is not None:
            await closer()
