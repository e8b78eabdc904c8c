"""The admin listener of every proxy mode: `/metrics` (Prometheus text) and `/healthz`/`/readyz`.

The gateway and the sidecar each serve one on their own port, from their own metrics registry, with
a health body of their own (config version, decisions, ...).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gatewatch.errors import ConfigError
from proxy.policy import CallNext, Exchange, Headers, Response
from proxy.server import HttpServer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Health = Callable[[], dict[str, Any]]


def admin_handler(registry: CollectorRegistry, health: Health) -> CallNext:
    """The admin chain: metrics of `registry`, `{"status": "ok", **health()}` on the health paths."""

    async def handle(exchange: Exchange) -> Response:
        path = exchange.request.path
        if path == "/metrics":
            # Imported on the first scrape: prometheus_client.exposition pulls http.server, wsgiref
            # and urllib.request (~3 MB) that a sidecar never scraped does not need (proxy.promlite).
            from prometheus_client import generate_latest

            text = generate_latest(registry)
            return Response(200, Headers([("content-type", "text/plain; version=0.0.4")]), text)
        if path in ("/healthz", "/readyz"):
            body = {"status": "ok", **health()}
            return Response(200, Headers([("content-type", "application/json")]), json.dumps(body).encode())
        return Response.json(404, {"error": "not_found"})

    return handle


async def start_admin(registry: CollectorRegistry, health: Health, host: str, port: int, what: str) -> HttpServer:
    """Bind the admin listener (port 0 = any free one); ConfigError naming `what` if it cannot listen."""
    server = HttpServer(admin_handler(registry, health), host, port)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"{what} cannot listen on {host}:{port} (admin): {exc.strerror}") from None
    return server
