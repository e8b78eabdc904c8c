"""A tiny asyncio HTTP/1.1 server (httptools parser) for the demo services: keep-alive, JSON in/out.

The demo services are stand-ins for real applications, so this is deliberately small: one handler
coroutine per server, no streaming, bodies capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools

MAX_BODY = 1 << 20


@dataclass
class Request:
    """One parsed request; header names are lower-case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer: str

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class Response:
    """What a handler answers."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(payload).encode(), {"content-type": "application/json", **(headers or {})})

    def encode(self, keep_alive: bool) -> bytes:
        reason = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else "Unknown"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        headers = {"content-length": str(len(self.body)), "connection": "keep-alive" if keep_alive else "close"}
        headers.update({k.lower(): v for k, v in self.headers.items()})
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


Handler = Callable[[Request], Awaitable[Response]]


class _Parsed:
    """httptools callbacks collect one request at a time."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_BODY:
            raise ValueError("body too large")
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


async def _serve_connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    peer_host = str(peer[0]) if peer else ""
    try:
        while True:
            parsed = _Parsed()
            parser = httptools.HttpRequestParser(parsed)
            while not parsed.done:
                data = await reader.read(65536)
                if not data:
                    return
                parser.feed_data(data)
            url = urlsplit(parsed.url.decode("latin-1"))
            request = Request(
                parser.get_method().decode(), url.path, parse_qs(url.query), parsed.headers, bytes(parsed.body),
                peer_host,
            )
            try:
                response = await handler(request)
            except Exception as exc:  # a demo app bug answers 500 rather than dropping the connection
                response = Response.json({"error": type(exc).__name__}, 500)
            keep_alive = parser.should_keep_alive()
            writer.write(response.encode(keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (httptools.HttpParserError, ValueError):
        with contextlib.suppress(OSError):
            writer.write(Response.json({"error": "bad request"}, 400).encode(False))
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(handler: Handler, host: str, port: int = 0) -> asyncio.Server:
    """Start serving `handler` on host:port (0 = a free port); the caller closes the server."""
    return await asyncio.start_server(
        lambda r, w: _serve_connection(handler, r, w), host, port, reuse_address=True
    )


def bound_port(server: asyncio.Server) -> int:
    """The port a started server listens on."""
    return int(server.sockets[0].getsockname()[1])
