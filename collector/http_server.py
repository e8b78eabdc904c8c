"""Runs an ASGI app on uvicorn in a background thread, on a socket bound before start returns."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from gatewatch.errors import GatewatchError


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0 = any free port), or a GatewatchError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GatewatchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the standard loop works, only slower
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class HttpServer:
    """uvicorn serving `app` until stop(): stop accepting, let in-flight requests finish, exit."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self._app, self._host, self._requested_port = app, host, port
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind, start serving in a thread, return once connections are accepted."""
        sock = bind(self._host, self._requested_port)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app, lifespan="off", log_level="warning", access_log=False, server_header=False,
            http="httptools", timeout_keep_alive=30, timeout_graceful_shutdown=30,
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(server, sock), name="collector-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            self.stop(1.0)
            raise GatewatchError(f"the OTLP/HTTP receiver did not start on {self._host}:{self.port}")

    @staticmethod
    def _run(server: uvicorn.Server, sock: socket.socket) -> None:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(server.serve(sockets=[sock]))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop; requests still running after `timeout_s` are abandoned with the thread."""
        if self._server is not None:
            self._server.config.timeout_graceful_shutdown = max(1, int(timeout_s))
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s + 1.0)
            self._thread = None
