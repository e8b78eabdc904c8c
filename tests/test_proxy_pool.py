"""The engine's pool of idle upstream connections (proxy.upstream.ConnectionPool): what a burst opened
is kept up to `max_idle` per endpoint and reused by the next burst; a connection idle for
`idle_timeout_s` is closed, the longest idle first; lower limits (a reload) apply at once. And a
listener lifts the open-files soft limit, so that a burst's connections fit. Real sockets on
127.0.0.1, one loop per test."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from proxy.upstream import ConnectionPool, UpstreamCaller
from tests.test_proxy_callbacks import Upstream, gateway, get, settled


async def _burst(port: int, requests: int) -> list[bytes]:
    """`requests` GETs at once, each on its own client connection; their status lines."""
    answers = await asyncio.gather(*(get(port) for _ in range(requests)))
    return [status for statuses in answers for status in statuses]


def test_a_burst_keeps_up_to_max_idle_connections_for_the_next_one() -> None:
    async def scenario() -> tuple[list[bytes], int, int, int]:
        upstream = Upstream(delay_s=0.2)  # every request of a burst is in flight at once
        await upstream.start()
        caller = UpstreamCaller(ConnectionPool(max_idle_per_endpoint=3))
        server = await gateway(upstream, caller=caller)
        answers = await _burst(server.port, 5)
        await settled(lambda: len(upstream.closed) == 2)
        kept, opened = caller.pool.open_connections, upstream.connections
        answers += await _burst(server.port, 3)  # served by the kept connections
        reopened = upstream.connections - opened
        await server.stop(1.0)
        await upstream.stop()
        return answers, kept, opened, reopened

    answers, kept, opened, reopened = asyncio.run(scenario())
    assert answers == [b"HTTP/1.1 200 OK"] * 8
    assert (opened, kept, reopened) == (5, 3, 0)


def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    async def scenario() -> tuple[list[bytes], int, int, list[int]]:
        upstream = Upstream()
        await upstream.start()
        caller = UpstreamCaller(ConnectionPool(idle_timeout_s=0.3))
        server = await gateway(upstream, caller=caller)
        answers = await get(server.port)
        pooled = caller.pool.open_connections
        await settled(lambda: upstream.closed)
        left = caller.pool.open_connections
        answers += await get(server.port)  # a new connection: the pool works on after a close
        await server.stop(1.0)
        await upstream.stop()
        return answers, pooled, left, upstream.closed

    answers, pooled, left, closed = asyncio.run(scenario())
    assert answers == [b"HTTP/1.1 200 OK"] * 2
    assert (pooled, left) == (1, 0)
    assert closed[0] == 1  # the pool closed it (one request answered), not the upstream


def test_the_longest_idle_connection_is_closed_first() -> None:
    async def scenario() -> list[int]:
        upstream = Upstream(delay_s=0.1)
        await upstream.start()
        caller = UpstreamCaller(ConnectionPool(idle_timeout_s=0.5))
        server = await gateway(upstream, caller=caller)
        await _burst(server.port, 2)  # two connections, idle from now on
        await get(server.port)  # one of them answers a second request: idle since later
        await settled(lambda: len(upstream.closed) == 2)
        await server.stop(1.0)
        await upstream.stop()
        return upstream.closed

    assert asyncio.run(scenario()) == [1, 2]


def test_lower_limits_close_the_excess_idle_connections_at_once() -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        upstream = Upstream(delay_s=0.2)
        await upstream.start()
        caller = UpstreamCaller(ConnectionPool(idle_timeout_s=60))
        server = await gateway(upstream, caller=caller)
        await _burst(server.port, 3)
        before = caller.pool.open_connections
        caller.pool.configure(max_idle_per_endpoint=1, idle_timeout_s=60)
        after = caller.pool.open_connections
        await settled(lambda: len(upstream.closed) == 2)
        await server.stop(1.0)
        await upstream.stop()
        return before, after, upstream.closed

    before, after, closed = asyncio.run(scenario())
    assert (before, after) == (3, 1)
    assert closed[:2] == [1, 1]  # closed by the pool, each after its one answer


def test_a_listener_raises_the_open_files_soft_limit_to_the_hard_one() -> None:
    """A burst needs two descriptors a request: the usual soft limit of 1024 must not cap it."""
    script = """
import asyncio, resource
from proxy.policy import answered, Response
from proxy.server import HttpServer
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
async def main():
    server = HttpServer(lambda exchange: answered(Response.json(200, {})))
    await server.start()
    await server.stop(0.1)
asyncio.run(main())
print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "True", result.stderr
