"""Raw HTTP/1.1 probes: an echo server on the proxy's listener that records every request it
handled, and a client that sends exact bytes and reads what comes back."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@dataclass
class Seen:
    """Requests the handler saw: (method, path, body bytes)."""

    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _ in self.requests]


@contextmanager
def echo_server(max_body: int = 1 << 16, delay_s: float = 0.0) -> Iterator[tuple[int, Seen]]:
    """The proxy's HttpServer with a handler that reads the body and answers 200 (after `delay_s`); yields its port."""
    from proxy.bodies import limit_body
    from proxy.policy import Exchange, Response
    from proxy.server import HttpServer, ServerLimits

    seen = Seen()

    async def handler(exchange: Exchange) -> Response:
        body = b"".join([chunk async for chunk in limit_body(exchange.request.body, max_body)])
        if delay_s:
            await asyncio.sleep(delay_s)  # a slow upstream: admission control has something to hold back
        with seen.lock:
            seen.requests.append((exchange.request.method, exchange.request.path, body))
        return Response.json(200, {"path": exchange.request.path, "body": len(body)})

    loop = asyncio.new_event_loop()
    limits = ServerLimits(max_header_bytes=8 * 1024, header_timeout_s=2.0, body_timeout_s=2.0, idle_timeout_s=2.0)
    server = HttpServer(handler, "127.0.0.1", 0, limits=limits)
    thread = threading.Thread(target=loop.run_forever, name="echo-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server.port, seen
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(2.0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def answered_until_close(handler: Callable[[Any], Awaitable[Any]], raw: bytes) -> bytes:
    """Everything an HttpServer with `handler` writes back to `raw` (sent at once) until it closes."""
    from proxy.server import HttpServer

    async def main() -> bytes:
        server = HttpServer(handler)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(raw)
            received = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return received
        finally:
            await server.stop(1)

    return asyncio.run(main())


@dataclass(frozen=True)
class Reply:
    """What came back on one connection, and whether the server closed it."""

    data: bytes
    closed: bool


def exchange_raw(port: int, raw: bytes, quiet_s: float = 1.0, timeout_s: float = 5.0) -> Reply:
    """Send `raw` on a fresh connection; read until the server closes or stays quiet `quiet_s`.

    No half-close: an HTTP client keeps its side open until it has the response.
    """
    chunks, closed = [], False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(raw)
        sock.settimeout(quiet_s)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            closed = True
        except TimeoutError:
            pass  # keep-alive: the server answered and waits for the next request
        except ConnectionResetError:
            closed = True
    return Reply(b"".join(chunks), closed)


def statuses(reply: Reply) -> list[int]:
    """Status codes of every response in `reply` (pipelined responses included)."""
    return [int(code) for code in _STATUS_LINE.findall(reply.data)]
