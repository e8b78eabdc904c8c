"""The OTLP/HTTP receiver as a bare ASGI app: POST /v1/traces, /healthz, /readyz, /metrics.

Blocking work (decompress, decode, split, wait for the span log) runs in a thread pool, so the
event loop only moves bytes; a request is admitted before its body is read, so memory is
bounded by the pending-queue size times the body limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import grpc
from prometheus_client import CONTENT_TYPE_LATEST

from collector.codec import Encoding, decode_request, decompress, encode_response, encode_status, encoding_of
from collector.errors import Backpressure, PayloadTooLarge, RequestRejected
from collector.ingest import ExportOutcome, Ingestor
from collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
PROTOCOL = "http"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its body was read."""


async def respond(send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]]) -> None:
    """Send a complete response."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or PayloadTooLarge as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class OtlpHttpApp:
    """ASGI callable serving OTLP/HTTP traces plus health and metrics endpoints."""

    def __init__(self, ingestor: Ingestor, metrics: CollectorMetrics, executor: Executor, max_body_bytes: int) -> None:
        self._ingestor = ingestor
        self._metrics = metrics
        self._executor = executor
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == TRACES_PATH:
            if method != "POST":
                await respond(send, 405, b"use POST\n", "text/plain", [(b"allow", b"POST")])
                return
            await self._traces(scope, receive, send)
        elif path == "/healthz":
            await respond(send, 200, b"ok\n", "text/plain", [])
        elif path == "/readyz":
            ready = await asyncio.get_running_loop().run_in_executor(self._executor, self._ingestor.ready)
            body = b"ready\n" if ready else b"span log unreachable\n"
            await respond(send, 200 if ready else 503, body, "text/plain", [])
        elif path == "/metrics":
            await respond(send, 200, self._metrics.exposition(), CONTENT_TYPE_LATEST, [])
        else:
            await respond(send, 404, b"not found\n", "text/plain", [])

    async def _traces(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
        encoding = Encoding.PROTOBUF
        try:
            encoding = encoding_of(headers.get(b"content-type", ""))
            declared = headers.get(b"content-length", "")
            if declared.isdigit() and int(declared) > self._max_body:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {self._max_body} bytes")
            with self._ingestor.admitted():
                body = await read_body(receive, self._max_body)
                self._metrics.bytes_received.labels(PROTOCOL).inc(len(body))
                outcome = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._process, body, headers.get(b"content-encoding", ""), encoding
                )
        except ClientGone:
            self._metrics.requests.labels(PROTOCOL, "client_gone").inc()
            return
        except RequestRejected as exc:
            await self._refuse(send, exc, encoding)
            return
        except Exception:
            log.exception("OTLP/HTTP export failed")
            self._metrics.requests.labels(PROTOCOL, "internal_error").inc()
            body = encode_status(encoding, grpc.StatusCode.INTERNAL.value[0], "internal collector error")
            await respond(send, 500, body, encoding.value, [])
            return
        self._metrics.requests.labels(PROTOCOL, "partial" if outcome.rejected else "ok").inc()
        await respond(
            send, 200, encode_response(encoding, outcome.rejected, outcome.error_message), encoding.value, []
        )

    def _process(self, body: bytes, content_encoding: str, encoding: Encoding) -> ExportOutcome:
        raw = decompress(body, content_encoding, self._max_body)
        return self._ingestor.export(decode_request(raw, encoding), PROTOCOL)

    async def _refuse(self, send: Send, exc: RequestRejected, encoding: Encoding) -> None:
        self._metrics.requests.labels(PROTOCOL, exc.reason).inc()
        extra: list[tuple[bytes, bytes]] = []
        if isinstance(exc, Backpressure):
            extra.append((b"retry-after", str(exc.retry_after_s).encode()))
        if exc.http_status == 415:
            await respond(send, 415, exc.message.encode() + b"\n", "text/plain", extra)
            return
        body = encode_status(encoding, exc.grpc_code.value[0], exc.message)
        await respond(send, exc.http_status, body, encoding.value, extra)
