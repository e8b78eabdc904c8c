"""Upstream side of the engine: endpoints, clusters (round robin + passive health) and the pooled
HTTP/1.1 client written on asyncio protocols with httptools (no httpx/aiohttp on the hot path).

`UpstreamCaller` is the innermost handler of every chain: it sends `exchange.request` to an
endpoint of `exchange.upstream` and returns the response with its body streamed.
"""

from __future__ import annotations

import asyncio
import math
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, cast

import httptools

from proxy.bodies import UpstreamBody, close_body
from proxy.deadlines import Deadlines
from proxy.flow import WriteBatch, WriteFlow
from proxy.headers import FIELD_NAMES, message_head, response_headers_from_upstream, upstream_request_headers
from proxy.policy import (
    Exchange,
    Headers,
    NoRoute,
    Pending,
    Request,
    Response,
    UpstreamConnectError,
    UpstreamTimeout,
)

# Read-side flow control: pause the upstream socket while this much body is queued unread.
_HIGH_WATER: Final = 256 * 1024
_monotonic: Final = time.monotonic


class Endpoint:
    """One upstream address; `ssl` turns on TLS (the sidecar's mTLS hook). Immutable, equal and
    hashed by (host, port, server_hostname)."""

    def __init__(self, host: str, port: int, ssl: ssl_module.SSLContext | None = None,
                 server_hostname: str | None = None) -> None:
        self.host: Final = host
        self.port: Final = port
        self.ssl: Final = ssl
        self.server_hostname: Final = server_hostname
        # Hashed once: pools and clusters look an endpoint up three times a request (a frozen
        # dataclass hashed a new tuple each time; its generated methods were interpreted code).
        self._hash: Final = hash((host, port, server_hostname))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, Endpoint) and self.host == other.host and self.port == other.port
            and self.server_hostname == other.server_hostname
        )

    def __repr__(self) -> str:
        return f"Endpoint({self.host!r}, {self.port}, tls={self.ssl is not None})"

    @property
    def address(self) -> str:
        """`host:port`, as recorded on spans and metrics."""
        return f"{self.host}:{self.port}"


class Cluster:
    """A named set of endpoints: round robin over the healthy ones, passive health by failures."""

    def __init__(
        self, name: str, endpoints: list[Endpoint], max_failures: int = 3, eject_s: float = 10.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        if not endpoints:
            raise ValueError(f"upstream {name!r} has no endpoints")
        self.name = name
        self.endpoints = endpoints
        self.max_failures = max_failures
        self.eject_s = eject_s
        self.connect_timeout_s = connect_timeout_s
        self._next = 0
        self._failures = [0] * len(endpoints)
        self._ejected_until = [0.0] * len(endpoints)
        self._index = {endpoint: i for i, endpoint in enumerate(endpoints)}

    def pick(self) -> Endpoint:
        """Next healthy endpoint in round-robin order; if all are ejected, the next one anyway."""
        count = len(self.endpoints)
        now = _monotonic()
        for _ in range(count):
            i = self._next
            self._next = (i + 1) % count
            if self._ejected_until[i] <= now:
                return self.endpoints[i]
        i = self._next
        self._next = (i + 1) % count
        return self.endpoints[i]

    def report(self, endpoint: Endpoint, ok: bool) -> None:
        """Passive health: eject an endpoint for `eject_s` after `max_failures` failures in a row."""
        i = self._index.get(endpoint)
        if i is None:
            return
        if ok:
            self._failures[i] = 0
            return
        self._failures[i] += 1
        if self._failures[i] >= self.max_failures:
            self._ejected_until[i] = _monotonic() + self.eject_s
            self._failures[i] = 0

    def healthy(self, endpoint: Endpoint) -> bool:
        """False while the endpoint is ejected."""
        i = self._index.get(endpoint)
        return i is None or self._ejected_until[i] <= _monotonic()


class _UpstreamProtocol(WriteFlow):
    """One upstream connection: parses responses with httptools, queues body chunks."""

    def __init__(self, pool: ConnectionPool, endpoint: Endpoint) -> None:
        self.pool = pool
        self.endpoint = endpoint
        # Kept: asyncio.get_running_loop() makes a getpid() system call each time (CPython 3.11).
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        self.headers_future: asyncio.Future[None] | None = None
        self.status = 0
        self.raw_headers: list[tuple[str, str]] = []
        self.chunks: deque[bytes] = deque()
        self.queued = 0
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.keep_alive = True
        self.head = False
        self.idle_since = 0.0  # loop time of its last return to the pool
        # The callback path's listener (`_Call.on_head`): told once the head is in or the exchange
        # failed, from this protocol's own callbacks; the awaiting path uses `headers_future`.
        self.on_head: Callable[[_UpstreamProtocol], None] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses (no isinstance), same interface.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamConnectError("upstream switched protocols; not supported"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectError(f"malformed response from upstream: {exc}"))
        else:
            # After the whole chunk, not in on_headers_complete: a body that came with the head is
            # then queued, and `complete` says whether it is all there.
            if self.status and self.on_head is not None:
                self._tell_head()

    def _tell_head(self) -> None:
        listener, self.on_head = self.on_head, None
        if listener is not None:
            listener(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if not self.complete:
            self._fail(UpstreamConnectError("upstream closed the connection"))
        self._wake_drain()

    def connection_ended(self) -> bool:
        return self.closed

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((FIELD_NAMES[name], value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # interim response (100 Continue): wait for the final one
            self.raw_headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        future = self.headers_future
        if future is not None and not future.done():
            future.set_result(None)
        if self.head:  # a HEAD response has no body whatever its Content-Length says
            self.keep_alive = False
            self.complete = True
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.queued += len(body)
        if self.queued > _HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:
            self.complete = True
            self._wake()

    # helpers
    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        future = self.headers_future
        if future is not None and not future.done():
            future.set_exception(exc)
        self._tell_head()
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def reset(self, head: bool, on_head: Callable[[_UpstreamProtocol], None] | None = None) -> None:
        """Prepare for the next request on this connection; the response's head is announced to
        `on_head`, or else by `headers_future`."""
        self.status = 0
        self.raw_headers = []
        self.chunks.clear()
        self.queued = 0
        self.complete = False
        self.error = None
        self.head = head
        self.on_head = on_head
        self.headers_future = self.loop.create_future() if on_head is None else None

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self.wait_writable()
        if self.closed:
            raise UpstreamConnectError("upstream closed the connection while sending the request")

    async def next_chunk(self, timeout_s: float | None) -> bytes | None:
        """The next body chunk, or None at the end of the body."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.queued -= len(chunk)
                if self.read_paused and self.queued < _HIGH_WATER // 2 and self.transport is not None:
                    self.read_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self.waiter = self.loop.create_future()
            try:
                await _with_timeout(self.pool.deadlines, self.waiter, timeout_s)
            finally:
                self.waiter = None


_TIMEOUT_ERRORS: Final[dict[float, Callable[[], BaseException]]] = {}


def _timeout_error(timeout_s: float) -> Callable[[], BaseException]:
    """The error factory for one timeout value, made once per value (routes share a few)."""
    factory = _TIMEOUT_ERRORS.get(timeout_s)
    if factory is None:
        if len(_TIMEOUT_ERRORS) > 1000:  # deadlines make arbitrary values: keep this bounded
            _TIMEOUT_ERRORS.clear()
        message = f"upstream did not answer within {timeout_s:g}s"
        factory = _TIMEOUT_ERRORS[timeout_s] = partial(UpstreamTimeout, message)
    return factory


def _with_timeout(deadlines: Deadlines, future: asyncio.Future[None], timeout_s: float | None) -> Awaitable[None]:
    """Await a future, failing with UpstreamTimeout after `timeout_s` (None: no limit).

    A plain function returning the awaitable: no coroutine frame of its own per wait.
    """
    if timeout_s is None:
        return future
    return deadlines.wait(future, timeout_s, _timeout_error(timeout_s))


class ConnectionPool:
    """Keep-alive connections per endpoint, reused LIFO. Up to `max_idle` idle ones are kept per
    endpoint (more are closed as they come back); one idle for `idle_timeout_s` is closed.

    The defaults are Envoy's connection limit per cluster (1024) and nginx's upstream
    `keepalive_timeout` (60 s). A smaller cap closes what a burst opened, and the next burst pays
    for as many new connections, just when the proxy is busiest: with 64, bursts of 128 concurrent
    requests made the gateway open ~40-1,200 connections a second (mTLS sidecars: a handshake storm).
    """

    def __init__(self, max_idle_per_endpoint: int = 1024, idle_timeout_s: float = 60.0) -> None:
        self.max_idle = max_idle_per_endpoint
        self.idle_timeout_s = idle_timeout_s
        self.deadlines = Deadlines()  # response timeouts of this pool's exchanges, one sweep timer
        self.writes = WriteBatch()  # bodiless requests, written at the end of each loop pass
        self._idle: dict[Endpoint, list[_UpstreamProtocol]] = {}
        self._all: set[_UpstreamProtocol] = set()
        self._expiry: asyncio.TimerHandle | None = None  # armed while connections are idle

    def idle_connection(self, endpoint: Endpoint) -> _UpstreamProtocol | None:
        """A pooled open connection to `endpoint`, if there is one (no await: the usual case)."""
        idle = self._idle.get(endpoint)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def acquire(self, endpoint: Endpoint, connect_timeout_s: float) -> tuple[_UpstreamProtocol, bool]:
        """An open connection to `endpoint` and whether it was reused from the pool."""
        conn = self.idle_connection(endpoint)
        if conn is not None:
            return conn, True
        return await self.connect(endpoint, connect_timeout_s), False

    async def connect(self, endpoint: Endpoint, connect_timeout_s: float) -> _UpstreamProtocol:
        """A new connection to `endpoint` (UpstreamTimeout / UpstreamConnectError on failure)."""
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _UpstreamProtocol(self, endpoint), endpoint.host, endpoint.port,
                    ssl=endpoint.ssl, server_hostname=endpoint.server_hostname if endpoint.ssl else None,
                ),
                connect_timeout_s,
            )
        except TimeoutError:
            raise UpstreamTimeout(f"connect to {endpoint.address} timed out") from None
        except (OSError, ssl_module.SSLError) as exc:
            raise UpstreamConnectError(f"cannot connect to {endpoint.address}: {exc.strerror or exc}") from None
        self._all.add(protocol)
        return protocol

    def release(self, conn: _UpstreamProtocol) -> None:
        """Return a connection after a complete response; close it if it cannot be reused."""
        if conn.closed or not conn.keep_alive or conn.error is not None or not conn.complete:
            self.discard(conn)
            return
        idle = self._idle.setdefault(conn.endpoint, [])
        if len(idle) >= self.max_idle:
            self.discard(conn)
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)
        if self._expiry is None:
            self._expiry = conn.loop.call_later(self.idle_timeout_s, self._close_expired)

    def configure(self, max_idle_per_endpoint: int, idle_timeout_s: float) -> None:
        """New limits (a config reload, on the pool's loop): idle connections beyond them close now."""
        self.max_idle, self.idle_timeout_s = max_idle_per_endpoint, idle_timeout_s
        if self._expiry is not None:
            self._expiry.cancel()
            self._close_expired()

    def _close_expired(self) -> None:
        """Close the connections idle for `idle_timeout_s` or beyond `max_idle`; re-arm for the next one due."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_due = math.inf
        for idle in self._idle.values():
            # LIFO: the bottom of the list has been idle longest.
            expired = max(0, len(idle) - self.max_idle)
            while expired < len(idle) and now - idle[expired].idle_since >= self.idle_timeout_s:
                expired += 1
            closing = idle[:expired]
            del idle[:expired]
            for conn in closing:
                self.discard(conn)
            if idle:
                next_due = min(next_due, idle[0].idle_since + self.idle_timeout_s)
        if next_due < math.inf:
            self._expiry = loop.call_later(max(next_due - now, 0.0), self._close_expired)

    def discard(self, conn: _UpstreamProtocol) -> None:
        """Close a connection that must not be reused."""
        if conn.transport is not None:
            conn.transport.close()
        self.forget(conn)

    def forget(self, conn: _UpstreamProtocol) -> None:
        """Drop a closed connection from the bookkeeping."""
        self._all.discard(conn)
        idle = self._idle.get(conn.endpoint)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        """Close every connection (shutdown)."""
        for conn in list(self._all):
            self.discard(conn)
        self._idle.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    @property
    def open_connections(self) -> int:
        """How many upstream connections are open."""
        return len(self._all)


def _request_head(request: Request, headers: Headers) -> tuple[bytes, bool]:
    """The request's head, encoded, and whether a body follows it (Content-Length or chunked)."""
    chunked = request.content_length is None and "transfer-encoding" in request.headers
    if chunked:
        headers.set("transfer-encoding", "chunked")
    head = message_head(f"{request.method} {request.target} HTTP/1.1\r\n", headers.items())
    return head, chunked or request.content_length is not None


class UpstreamCaller:
    """The terminal handler: forward the exchange to its upstream cluster, stream the answer back.

    A bodiless request on a pooled connection (the usual case) is answered from the connection's
    callbacks: the returned `Pending` is settled when the head is in, with no coroutine, task or
    future of its own (README Proxy performance). Anything else (a body to send, a connection to open) goes
    through the `_call` coroutine. Both make the response in `_response_of`.
    """

    def __init__(self, pool: ConnectionPool | None = None, add_forwarded: bool = True) -> None:
        self.pool = pool or ConnectionPool()
        self.add_forwarded = add_forwarded
        self.retries: set[asyncio.Task[None]] = set()  # callback-path retries in flight (held, not collected)

    def __call__(self, exchange: Exchange) -> Awaitable[Response]:
        cluster = exchange.upstream
        if cluster is None:
            raise NoRoute("no upstream selected for this request")
        endpoint = exchange.endpoint or cluster.pick()
        exchange.endpoint = endpoint
        wait_s = _remaining(exchange)
        request = exchange.request
        headers = upstream_request_headers(exchange, self.add_forwarded)
        conn = self.pool.idle_connection(endpoint)
        if conn is None or request.content_length is not None or "transfer-encoding" in request.headers:
            return self._call(conn, exchange, headers, wait_s, cluster, endpoint)
        return _Call(self, conn, exchange, headers, wait_s, cluster, endpoint).pending

    async def _call(
        self, conn: _UpstreamProtocol | None, exchange: Exchange, headers: Headers, wait_s: float | None,
        cluster: Cluster, endpoint: Endpoint,
    ) -> Response:
        """The request on `conn`, or on a new connection when None."""
        try:
            reused = conn is not None
            if conn is None:
                conn = await self.pool.connect(endpoint, cluster.connect_timeout_s)
            # A pooled connection the upstream closed while idle fails before any byte of the answer;
            # that is safe to retry once on a fresh connection when the body can be replayed.
            try:
                return await self._exchange_on(conn, exchange, headers, wait_s, cluster, endpoint)
            except UpstreamConnectError:
                if not (reused and exchange.request.replayable):
                    raise
            return await self._again(exchange, headers, wait_s, cluster, endpoint)
        except (UpstreamConnectError, UpstreamTimeout):
            cluster.report(endpoint, ok=False)
            raise

    async def _again(
        self, exchange: Exchange, headers: Headers, wait_s: float | None, cluster: Cluster, endpoint: Endpoint,
    ) -> Response:
        """The one retry after a pooled connection failed: the replayed request on another connection."""
        exchange.request.fresh_body()
        conn, _ = await self.pool.acquire(endpoint, cluster.connect_timeout_s)
        return await self._exchange_on(conn, exchange, headers, wait_s, cluster, endpoint)

    async def _exchange_on(
        self, conn: _UpstreamProtocol, exchange: Exchange, headers: Headers, wait_s: float | None,
        cluster: Cluster, endpoint: Endpoint,
    ) -> Response:
        head = exchange.request.method == "HEAD"
        conn.reset(head)
        try:
            head_bytes, with_body = _request_head(exchange.request, headers)
            if with_body:
                await self._write_body(conn, exchange.request, bytearray(head_bytes))
            else:
                assert conn.transport is not None
                self.pool.writes.write(conn.loop, conn.transport, head_bytes)
            assert conn.headers_future is not None
            await _with_timeout(self.pool.deadlines, conn.headers_future, wait_s)
        except BaseException:
            future = conn.headers_future
            if future is not None and future.done() and not future.cancelled():
                future.exception()  # retrieved: a failure we are already propagating another way
            self.pool.discard(conn)
            raise
        return self._response_of(conn, head, wait_s, cluster, endpoint)

    def _response_of(
        self, conn: _UpstreamProtocol, head: bool, wait_s: float | None, cluster: Cluster, endpoint: Endpoint,
    ) -> Response:
        """The response whose head `conn` has received; its body whole when it is in, else streamed."""
        cluster.report(endpoint, ok=conn.status < 500)
        response_headers, content_length = response_headers_from_upstream(conn.raw_headers)
        if head or conn.status in (204, 304):
            self.pool.release(conn) if conn.complete else self.pool.discard(conn)
            return Response(conn.status, response_headers, b"")
        if conn.complete and len(conn.chunks) <= 1:
            body = conn.chunks.popleft() if conn.chunks else b""
            self.pool.release(conn)
            return Response(conn.status, response_headers, body)
        return Response(
            conn.status, response_headers, UpstreamBody(self.pool, conn, wait_s), content_length=content_length,
        )

    async def _write_body(self, conn: _UpstreamProtocol, request: Request, buffer: bytearray) -> None:
        """Send the head in `buffer` with the body's first chunk, then the rest (chunked unless sized)."""
        transport = conn.transport
        assert transport is not None
        chunked = request.content_length is None
        async for chunk in request.body:
            if conn.error is not None or transport.is_closing():
                break  # the upstream answered early or failed: writing would raise on a closed transport
            if not chunk:
                continue
            if chunked:
                buffer += b"%x\r\n" % len(chunk)
                buffer += chunk
                buffer += b"\r\n"
            else:
                buffer += chunk
            transport.write(buffer)
            buffer = bytearray()
            if conn.write_paused:
                await conn.drain()
            if conn.error is not None:  # the upstream answered early or failed: stop sending
                break
        if chunked:
            buffer += b"0\r\n\r\n"
        if buffer:
            transport.write(buffer)

    def close(self) -> None:
        """Close pooled connections."""
        self.pool.close()


class _Call:
    """One bodiless request on a pooled connection, answered from the connection's callbacks."""

    def __init__(
        self, caller: UpstreamCaller, conn: _UpstreamProtocol, exchange: Exchange, headers: Headers,
        wait_s: float | None, cluster: Cluster, endpoint: Endpoint,
    ) -> None:
        self.caller = caller
        self.exchange = exchange
        self.headers = headers
        self.wait_s = wait_s
        self.cluster = cluster
        self.endpoint = endpoint
        self.head = exchange.request.method == "HEAD"
        self.pending = Pending()
        self.timer: asyncio.TimerHandle | None = None
        self.conn: _UpstreamProtocol | None = conn
        pool = caller.pool
        conn.reset(self.head, self.on_head)
        assert conn.transport is not None
        pool.writes.write(conn.loop, conn.transport, _request_head(exchange.request, headers)[0])
        if wait_s is not None:
            self.timer = pool.deadlines.watch(conn.loop, self, wait_s, self.on_expire)

    def on_head(self, conn: _UpstreamProtocol) -> None:
        """The connection has the response's head, or failed before it."""
        self.conn = None
        caller, pending = self.caller, self.pending
        if self.wait_s is not None:
            caller.pool.deadlines.unwatch(self, self.timer)
        error = conn.error
        if error is None:
            if pending.abandoned():
                caller.pool.discard(conn)  # its body would never be read to the end
                return
            try:
                response = caller._response_of(conn, self.head, self.wait_s, self.cluster, self.endpoint)
            except Exception as failure:  # a bug here must not leave the client waiting
                caller.pool.discard(conn)
                pending.fail(failure)
                return
            pending.resolve(response)
            return
        caller.pool.discard(conn)
        if isinstance(error, UpstreamConnectError) and self.exchange.request.replayable:  # see _call
            retry = conn.loop.create_task(self._retry())
            caller.retries.add(retry)
            retry.add_done_callback(caller.retries.discard)
            return
        self.cluster.report(self.endpoint, ok=False)
        pending.fail(error)

    def on_expire(self) -> None:
        """No head within the timeout: give up the connection."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        conn.on_head = None
        self.caller.pool.discard(conn)
        self.cluster.report(self.endpoint, ok=False)
        assert self.wait_s is not None
        self.pending.fail(_timeout_error(self.wait_s)())

    async def _retry(self) -> None:
        try:
            response = await self.caller._again(self.exchange, self.headers, self.wait_s, self.cluster, self.endpoint)
        except (UpstreamConnectError, UpstreamTimeout) as exc:
            self.cluster.report(self.endpoint, ok=False)
            self.pending.fail(exc)
            return
        except Exception as failure:  # handed to the request's handler, which answers it
            self.pending.fail(failure)
            return
        if self.pending.abandoned():  # nobody will read it: a streamed body would hold its connection
            await close_body(response.body)
            return
        self.pending.resolve(response)


def _remaining(exchange: Exchange) -> float | None:
    """Time left for this try: the per-try timeout capped by the exchange's deadline."""
    timeout = exchange.timeout_s
    if exchange.deadline is not None:
        left = exchange.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise UpstreamTimeout("deadline exceeded before calling upstream")
        timeout = left if timeout is None else min(timeout, left)
    return timeout

