"""`gatewatch dashboards serve`: the report over HTTP, re-queried on every load.

`GET /?minutes=60&route=GET%20/api/x` renders the last hour with a variable chosen; `/healthz` answers
`ok`. It binds to settings.host (127.0.0.1 by default) and implements the Service protocol.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from dashboards.macros import TimeRange
from dashboards.report import page_html, run_all
from gatewatch.errors import GatewatchError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from gatewatch.settings import Settings

log = logging.getLogger(__name__)
MAX_MINUTES = 60 * 24 * 31


def parse_request(query: str) -> tuple[timedelta, dict[str, list[str]]]:
    """The time span and chosen variables of a report URL; bad values raise ValueError."""
    params = parse_qs(query, keep_blank_values=False)
    minutes = int(params.pop("minutes", ["60"])[0])
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be 1..{MAX_MINUTES}")
    return timedelta(minutes=minutes), params


class ReportServer:
    """Serves the HTML report; queries run one at a time (the chDB client is not shared concurrently)."""

    name = "dashboards"

    def __init__(
        self, settings: Settings, store: Client, port: int = 3001, defaults: Mapping[str, list[str]] | None = None
    ) -> None:
        self.settings, self.store, self.port = settings, store, port
        self.defaults = dict(defaults or {})
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL once started."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def render(self, query: str) -> str:
        """The page for one request's query string."""
        span, variables = parse_request(query)
        with self._lock:
            runs = run_all(self.store, self.settings.database, TimeRange.last(span), {**self.defaults, **variables})
        return page_html(runs, runs[0].context.time_range if runs else TimeRange.last(span))

    def start(self) -> None:
        """Bind and serve in a background thread."""
        try:
            self._server = ThreadingHTTPServer((self.settings.host, self.port), _handler(self))
        except OSError as exc:
            raise GatewatchError(f"cannot listen on {self.settings.host}:{self.port}: {exc.strerror}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="dashboards-http", daemon=True)
        self._thread.start()
        log.info("dashboards report at %s", self.url)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout_s)


def _handler(server: ReportServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/healthz":
                self._reply(200, b"ok\n", "text/plain")
                return
            if url.path not in ("/", "/index.html"):
                self._reply(404, b"not found\n", "text/plain")
                return
            try:
                body = server.render(url.query).encode()
            except ValueError as exc:
                self._reply(400, f"bad request: {exc}\n".encode(), "text/plain")
                return
            self._reply(200, body, "text/html; charset=utf-8")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                             "script-src 'unsafe-inline'; img-src data:")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.client_address[0], *args)

    return Handler
