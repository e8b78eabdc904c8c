"""Message bodies as async iterators of chunks: empty, replayed, size-limited, and an upstream
response read off its pooled connection.

These are async generators, which mypyc does not compile: they live here, outside
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


async def upstream_body(pool: ConnectionPool, conn: _UpstreamProtocol, wait_s: float | None) -> AsyncIterator[bytes]:
    """An upstream response's body; the connection goes back to `pool` once it was read to the end."""
    done = False
    try:
        while True:
            chunk = await conn.next_chunk(wait_s)
            if chunk is None:
                done = True
                return
            yield chunk
    finally:
        # An abandoned body (client gone, error) leaves the connection mid-message: close it.
        pool.release(conn) if done else pool.discard(conn)
