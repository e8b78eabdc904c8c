"""Blocking HTTP/1.1 POSTs to one URL on one kept-alive connection, for the OTLP export thread.

A socket, `ssl` and the `httptools` response parser the engine already loads: `http.client` would
import the `email` package (~0.8 MB of a sidecar's RSS) to read one status line and one header.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

from proxy.headers import message_head

CONNECTION_ERRORS = (OSError, httptools.HttpParserError)  # refused, reset, timed out, bad response
_READ_SIZE = 16384


class _Response:
    """httptools callbacks: the status, the Retry-After header, whether the message is complete."""

    def __init__(self) -> None:
        self.retry_after: str | None = None
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None
        self._header = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header = name.lower()
        if self._header == b"retry-after":
            self.retry_after = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Asked now: once the message is complete llhttp has reset its flags, and a response sized by
        # Content-Length would read as "delimited by the close": a new connection for every POST.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True


def encode_head(path: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    """The request line and headers of a POST of `length` bytes; ValueError on CR/LF/NUL in a header."""
    for name, value in headers.items():
        if any(char in name + value for char in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid HTTP header {name!r}")
    fields = [("host", host), ("content-length", str(length)), *headers.items()]
    return message_head(f"POST {path} HTTP/1.1\r\n", fields)


class HttpPoster:
    """POSTs bodies to one http(s) URL over a kept-alive connection (re-opened after errors)."""

    def __init__(self, url: str, timeout_s: float, context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OTLP endpoint must be an http(s) URL, got {url!r}")
        self.url = url
        self._hostname = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._context = context if parts.scheme == "https" else None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()  # one request at a time on the connection

    def post(self, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, str | None]:
        """The response status and its Retry-After header; raises OSError/HttpParserError on failure."""
        head = encode_head(self._path, self._host_header, headers, len(body))
        with self._lock:
            reused = self._socket is not None
            try:
                return self._post(head + body, timeout_s)
            except CONNECTION_ERRORS:
                if not reused:
                    raise
            # The peer may have closed the idle kept-alive connection: once more on a new one.
            return self._post(head + body, timeout_s)

    def _post(self, request: bytes, timeout_s: float) -> tuple[int, str | None]:
        try:
            sock = self._socket or self._connect(timeout_s)
            sock.settimeout(timeout_s)
            sock.sendall(request)
            response = _Response()
            parser = response.parser = httptools.HttpResponseParser(response)
            while not response.complete:
                data = sock.recv(_READ_SIZE)
                if not data:
                    if response.headers_done:  # a body delimited by the end of the connection
                        break
                    raise ConnectionError("the collector closed the connection before its response")
                parser.feed_data(data)
        except BaseException:
            self.close_connection()
            raise
        if not response.complete or not response.keep_alive:
            self.close_connection()
        return parser.get_status_code(), response.retry_after

    def _connect(self, timeout_s: float) -> socket.socket:
        sock = socket.create_connection((self._hostname, self._port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._context is not None:
            try:
                sock = self._context.wrap_socket(sock, server_hostname=self._hostname)
            except BaseException:
                sock.close()
                raise
        self._socket = sock
        return sock

    def close_connection(self) -> None:
        """Drop the kept-alive connection (the next post opens a new one)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
