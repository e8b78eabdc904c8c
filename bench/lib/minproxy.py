"""The least a uvloop + httptools reverse proxy does per request, as a floor for bench/floor.py.

Each client connection gets one upstream connection. Each request is parsed, its head rebuilt with
`X-Forwarded-For` (hop-by-hop fields dropped) and sent from an asyncio Task, which awaits the parsed
response and writes it back: the gateway's shape (a task per request, both directions parsed) with
no policies, spans, metrics, timeouts or bodies. Bench-only: GET without a body, nothing else.

    python -m bench.lib.minproxy LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

from proxy.headers import HOP_BY_HOP

_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)  # the gateway's set, as the parser's bytes


class _Upstream(asyncio.Protocol):
    """One upstream connection: resolves `waiter` with each whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.received: list[bytes] = []
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        response, self.received = b"".join(self.received), []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed"))


class _Client(asyncio.Protocol):
    """One client connection, served in order by one task per request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Future[_Upstream] = self.loop.create_future()
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.client = b"127.0.0.1"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client = str(transport.get_extra_info("peername")[0]).encode()
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        _, upstream = await self.loop.create_connection(_Upstream, "127.0.0.1", self.upstream_port)
        self.upstream.set_result(upstream)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream.done() and self.upstream.result().transport is not None:
            self.upstream.result().transport.close()  # type: ignore[union-attr]

    def on_message_begin(self) -> None:
        self.url, self.fields = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_message_complete(self) -> None:
        self.loop.create_task(self._forward(self.parser.get_method(), self.url, self.fields))

    async def _forward(self, method: bytes, url: bytes, fields: list[tuple[bytes, bytes]]) -> None:
        head = [method + b" " + url + b" HTTP/1.1\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in fields if name.lower() not in _HOP_BY_HOP]
        head.append(b"x-forwarded-for: " + self.client + b"\r\n\r\n")
        upstream = await self.upstream
        upstream.waiter = self.loop.create_future()
        assert upstream.transport is not None and self.transport is not None
        upstream.transport.write(b"".join(head))
        try:
            response = await upstream.waiter
        except ConnectionError:
            self.transport.close()
            return
        if not self.transport.is_closing():
            self.transport.write(response)


async def serve(port: int, upstream_port: int) -> None:
    """Listen on 127.0.0.1:`port` until cancelled or terminated."""
    server = await asyncio.get_running_loop().create_server(lambda: _Client(upstream_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
