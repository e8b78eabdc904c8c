"""Helpers for the sidecar tests: real local services (threaded HTTP servers) and sidecar factories."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gatewatch.settings import Settings
from proxy import certs
from proxy.sidecar import SidecarService
from proxy.sidecar_config import parse_sidecar_config

Behaviour = Callable[["Backend", BaseHTTPRequestHandler], tuple[int, bytes]]


@dataclass
class Backend:
    """A local service: answers with `status` (after `delay_s`), counts hits, keeps request headers."""

    status: int = 200
    delay_s: float = 0.0
    behaviour: Behaviour | None = None
    hits: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        with self.lock:
            self.hits += 1
            self.seen.append({k.lower(): v for k, v in handler.headers.items()})
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.behaviour is not None:
            return self.behaviour(self, handler)
        return self.status, b"hello from backend"


def _handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            status, body = backend.answer(self)
            try:
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                self.close_connection = True  # the proxy gave up on a slow answer (deadline tests)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # listen backlog: bursts of concurrent connections (default 5)


@contextmanager
def running_backend(**kwargs: Any) -> Iterator[Backend]:
    """A Backend listening on 127.0.0.1 for the duration of the block."""
    backend = Backend(**kwargs)
    server = _Server(("127.0.0.1", 0), _handler(backend))
    server.daemon_threads = True
    backend.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        server.server_close()


def make_pki(directory: Path, *services: str) -> Path:
    """A local CA in `directory` with a certificate for each service."""
    certs.init_ca(directory)
    for service in services:
        certs.issue(directory, service)
    return directory


def free_port() -> int:
    """A port nothing listens on right now (for processes that need one up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Block until something accepts on 127.0.0.1:`port`; fail if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else b""
            raise RuntimeError(f"process exited with {process.returncode}: {stderr!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tls_block(pki: Path | None, service: str) -> dict[str, Any]:
    """The `tls` section: mTLS with `service`'s certificate from `pki`, or plain when pki is None."""
    if pki is None:
        return {"enabled": False}
    return {"enabled": True, "ca": str(pki / "ca.pem"), "cert": str(pki / f"{service}.pem"),
            "key": str(pki / f"{service}.key")}


@contextmanager
def running_sidecar(service: str, forward_to: int, settings: Settings, services: dict[str, list[int]] | None = None,
                    pki: Path | None = None, **extra: Any) -> Iterator[SidecarService]:
    """A started sidecar for `service` forwarding inbound to 127.0.0.1:`forward_to`; `services` maps
    callee names to the inbound ports of their sidecars."""
    raw: dict[str, Any] = {
        "service": service,
        "inbound": {"port": 0, "forward_to": f"127.0.0.1:{forward_to}", **extra.pop("inbound", {})},
        "outbound": {"port": 0},
        "tls": tls_block(pki, service),
        "services": {
            name: {"endpoints": [f"127.0.0.1:{port}" for port in ports]} for name, ports in (services or {}).items()
        },
        "tracing": {"enabled": False},
        **extra.pop("config", {}),
    }
    sidecar = SidecarService(parse_sidecar_config(raw), settings, **extra)
    sidecar.start()
    try:
        yield sidecar
    finally:
        sidecar.stop(timeout_s=2.0)
