"""The admin listener of every proxy mode: `/metrics` and `/healthz`/`/readyz`.

The gateway and the sidecar each serve one on their own port, from their own metrics registry, with
a health body of their own (config version, decisions, ...). `/metrics` is the classic Prometheus
text, or OpenMetrics (which Prometheus scrapes natively) when `openmetrics` is set: the sidecar's,
since that writer needs none of the modules the classic one imports (~3 MB, `proxy.promlite`).
A gateway run as several worker processes keeps its metrics in prometheus_client's multiprocess
mode (`PROMETHEUS_MULTIPROC_DIR`), and whichever worker a scrape reaches answers for all of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gatewatch.errors import ConfigError
from proxy.policy import CallNext, Exchange, Headers, Response
from proxy.server import HttpServer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Health = Callable[[], dict[str, Any]]


def admin_handler(registry: CollectorRegistry, health: Health, openmetrics: bool = False,
                  before_scrape: Callable[[], None] | None = None) -> CallNext:
    """The admin chain: metrics of `registry` (after `before_scrape()`), `{"status": "ok", **health()}`
    on the health paths."""

    async def handle(exchange: Exchange) -> Response:
        path = exchange.request.path
        if path == "/metrics":
            if before_scrape is not None:
                before_scrape()
            text, content_type = _exposition(_scraped(registry), openmetrics)
            return Response(200, Headers([("content-type", content_type)]), text)
        if path in ("/healthz", "/readyz"):
            body = {"status": "ok", **health()}
            return Response(200, Headers([("content-type", "application/json")]), json.dumps(body).encode())
        return Response.json(404, {"error": "not_found"})

    return handle


def _scraped(registry: CollectorRegistry) -> CollectorRegistry:
    """`registry`, or with worker processes a registry that merges every worker's metrics."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return registry
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    merged = CollectorRegistry()
    MultiProcessCollector(merged, directory)
    return merged


def _exposition(registry: CollectorRegistry, openmetrics: bool) -> tuple[bytes, str]:
    """`registry` as OpenMetrics or classic Prometheus text, with its content type."""
    # Imported on the first scrape: the classic writer (prometheus_client.exposition) pulls in
    # http.server, wsgiref, urllib.request and email; the OpenMetrics one only its own module.
    if openmetrics:
        from prometheus_client.openmetrics import exposition as open_exposition

        return open_exposition.generate_latest(registry), open_exposition.CONTENT_TYPE_LATEST
    from prometheus_client import generate_latest

    return generate_latest(registry), "text/plain; version=0.0.4"


async def start_admin(registry: CollectorRegistry, health: Health, host: str, port: int, what: str,
                      openmetrics: bool = False, reuse_port: bool = False,
                      before_scrape: Callable[[], None] | None = None) -> HttpServer:
    """Bind the admin listener (port 0 = any free one); ConfigError naming `what` if it cannot listen."""
    server = HttpServer(admin_handler(registry, health, openmetrics, before_scrape), host, port,
                        reuse_port=reuse_port)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"{what} cannot listen on {host}:{port} (admin): {exc.strerror}") from None
    return server
