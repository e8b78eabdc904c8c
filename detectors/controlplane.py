"""The control plane server: proxies and people read decisions and alerts over HTTP.

Implements the contract in `gatewatch.controlplane`: GET /v1/decisions, GET /v1/decisions/watch
(long poll with `since` and `timeout`), GET /v1/alerts, each behind `Authorization: Bearer <token>`
(compared in constant time; 401 otherwise). /metrics and /healthz are open, for scrapers and probes.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors.board import DecisionBoard, TopicFollower
from gatewatch.alerts import Alert
from gatewatch.controlplane import ALERTS_PATH, DECISIONS_PATH, MAX_WATCH_TIMEOUT_S, WATCH_PATH
from gatewatch.errors import GatewatchError
from gatewatch.settings import Settings
from gatewatch.spanlog import SpanLog, open_span_log

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)


def recent_alerts(store: Client, database: str, limit: int = 500) -> list[Alert]:
    """The latest state of the most recent alerts in the `alerts` table."""
    rows = store.query(
        f"SELECT Fingerprint, Name, Severity, Labels, Annotations, StartsAt, EndsAt, DecisionId "
        f"FROM {database}.alerts FINAL ORDER BY StartsAt DESC LIMIT %(limit)s",
        parameters={"limit": limit},
    ).result_rows
    keys = ("fingerprint", "name", "severity", "labels", "annotations", "starts_at", "ends_at", "decision_id")
    return [Alert.model_validate(dict(zip(keys, row, strict=True))) for row in rows]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control plane: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode())

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.token}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            return self._send(200, b'{"ok": true}')
        if url.path == "/metrics":
            return self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        if url.path not in (DECISIONS_PATH, WATCH_PATH, ALERTS_PATH):
            return self._error(404, f"no such path {url.path}")
        if not self._authorized():
            return self._error(401, "missing or wrong bearer token")
        try:
            body = self._route(url.path, parse_qs(url.query))
        except ValueError as exc:
            return self._error(400, str(exc))
        except Exception as exc:
            log.warning("control plane request %s failed: %s", url.path, exc)
            return self._error(503, "temporarily unavailable")
        self._send(200, body)

    def _route(self, path: str, query: dict[str, list[str]]) -> bytes:
        board = self.server.board
        if path == DECISIONS_PATH:
            return board.snapshot().model_dump_json().encode()
        if path == WATCH_PATH:
            since = _number(query, "since", 0, int)
            timeout = min(_number(query, "timeout", 30.0, float), MAX_WATCH_TIMEOUT_S)
            if since < 0 or timeout < 0:
                raise ValueError("since and timeout must not be negative")
            return board.wait(since, timeout).model_dump_json().encode()
        alerts = self.server.alerts()
        return json.dumps({"alerts": [a.model_dump(mode="json") for a in alerts]}).encode()


def _number(query: dict[str, list[str]], name: str, default: Any, kind: type) -> Any:
    if name not in query:
        return default
    try:
        return kind(query[name][0])
    except ValueError:
        raise ValueError(f"{name} must be a number") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # long polls must not hold up stop()
    token: str
    board: DecisionBoard
    alerts: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A proxy that goes away in the middle of a long poll is routine, not a traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("control plane client %s went away", client_address)
            return
        super().handle_error(request, client_address)


class ControlPlaneService:
    """The control plane as a Service; `port` is the bound port once started (settings port 0 = any)."""

    name = "controlplane"

    def __init__(self, settings: Settings, board: DecisionBoard | None = None, store: Client | None = None,
                 span_log: SpanLog | None = None) -> None:
        self.settings = settings
        self.board = board or DecisionBoard()
        self._follow = board is None
        self._store = store
        self._span_log = span_log
        self._server: _Server | None = None
        self._follower: TopicFollower | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.token = ""  # the bearer token in force once started (generated when none is configured)

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://{self.settings.host}:{self.port}"

    def start(self) -> None:
        """Bind, start following the decisions topic, serve in a background thread."""
        token = self.token = self.settings.control_token.get_secret_value() or secrets.token_urlsafe(24)
        if not self.settings.control_token.get_secret_value():
            log.warning("GATEWATCH_CONTROL_TOKEN is not set: using a random token for this process (.token)")
        if self._follow:
            self._follower = TopicFollower(self._span_log or open_span_log(self.settings),
                                           self.settings.decisions_topic, self.board)
            self._follower.start()
        try:
            server = _Server((self.settings.host, self.settings.control_plane_port), _Handler)
        except OSError as exc:
            raise GatewatchError(
                f"control plane cannot listen on {self.settings.host}:{self.settings.control_plane_port}: {exc}"
            ) from None
        server.token, server.board, server.alerts = token, self.board, self._alerts
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="controlplane-http", daemon=True)
        self._thread.start()
        log.info("control plane listening on %s", self.url)

    def _alerts(self) -> list[Alert]:
        if self._store is None:
            from gatewatch.store import open_store

            self._store = open_store(self.settings)
        return recent_alerts(self._store, self.settings.database)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and following."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout_s)
        if self._follower:
            self._follower.stop(timeout_s)
