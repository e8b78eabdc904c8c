"""The proxies' stdlib OTLP/HTTP exporter: the request the collector gets, retries, no requests/protobuf."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from proxy.otlpexport import WireOTLPSpanExporter
from proxy.spans import SERVER, FinishedSpan

RESOURCE = {"service.name": "svc"}
SCOPE = "gatewatch.test"


class Sink:
    """Records POSTs; answers each with the next queued (status, headers), then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.peers: list[tuple[str, int]] = []  # the client address of each POST


@contextmanager
def running_sink() -> Iterator[tuple[Sink, str]]:
    sink = Sink()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            sink.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            sink.peers.append(self.client_address)
            status, headers = sink.answers.pop(0) if sink.answers else (200, {})
            self.send_response(status)
            for key, value in {**headers, "content-length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield sink, f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


def _span(name: str = "GET") -> FinishedSpan:
    return FinishedSpan(name, SERVER, 7, 9, None, 1, 2, {"url.path": "/x"}, False)


def test_export_posts_the_otlp_request_with_env_headers_on_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue")
    with running_sink() as (sink, url):
        exporter = WireOTLPSpanExporter(url, RESOURCE, SCOPE, timeout=5)
        assert exporter.export([_span("a")]) is True
        assert exporter.export([_span("b"), _span("c")]) is True
        exporter.shutdown()
    assert [path for path, _, _ in sink.requests] == ["/v1/traces", "/v1/traces"]
    assert sink.peers[0] == sink.peers[1]  # the connection was kept alive
    _, headers, body = sink.requests[1]
    assert headers["content-type"] == "application/x-protobuf" and headers["x-tenant"] == "blue"
    request = ExportTraceServiceRequest.FromString(body)
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["b", "c"]


def test_retryable_status_is_retried_after_retry_after_and_gzip_is_applied() -> None:
    with running_sink() as (sink, url):
        sink.answers = [(503, {"retry-after": "0"}), (200, {})]
        exporter = WireOTLPSpanExporter(url, RESOURCE, SCOPE, timeout=5, compression="gzip")
        assert exporter.export([_span()]) is True
        exporter.shutdown()
    assert len(sink.requests) == 2
    _, headers, body = sink.requests[1]
    assert headers["content-encoding"] == "gzip"
    assert ExportTraceServiceRequest.FromString(gzip.decompress(body)).resource_spans


def test_client_errors_fail_at_once_and_a_dead_collector_fails_within_the_deadline() -> None:
    with running_sink() as (sink, url):
        sink.answers = [(400, {})]
        exporter = WireOTLPSpanExporter(url, RESOURCE, SCOPE, timeout=5)
        assert exporter.export([_span()]) is False
        exporter.shutdown()
        assert len(sink.requests) == 1
    # the sink is gone: connection refused, backoff > deadline
    dead = WireOTLPSpanExporter(url, RESOURCE, SCOPE, timeout=0.5)
    assert dead.export([_span()]) is False
    dead.shutdown()
    assert dead.export([_span()]) is False  # after shutdown


def test_bad_endpoint_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="http"):
        WireOTLPSpanExporter("collector:4318/v1/traces", RESOURCE, SCOPE)


def test_sidecar_process_imports_neither_requests_nor_protobuf() -> None:
    code = ("import sys, proxy.sidecar, proxy.sidecar_cli\n"
            "heavy = {m.split('.')[0] for m in sys.modules} & {'requests', 'urllib3', 'google'}\n"
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_collector_closing_each_connection_gets_every_batch() -> None:
    with running_sink() as (sink, url):
        sink.answers = [(200, {"connection": "close"})] * 3
        exporter = WireOTLPSpanExporter(url, RESOURCE, SCOPE, timeout=5)
        results = [exporter.export([_span(str(n))]) for n in range(3)]
        exporter.shutdown()
    assert results == [True] * 3 and len(sink.requests) == 3


def test_headers_http_cannot_carry_are_dropped_and_the_rest_sent() -> None:
    with running_sink() as (sink, url):
        exporter = WireOTLPSpanExporter(url, RESOURCE, SCOPE, timeout=5,
                                        headers={"x-ok": "1", "x-bad": "a\r\ninjected: yes"})
        assert exporter.export([_span()]) is True
        exporter.shutdown()
    _, headers, _ = sink.requests[0]
    assert headers["x-ok"] == "1" and "x-bad" not in headers and "injected" not in headers


def test_a_response_delimited_by_the_end_of_the_connection_is_a_success() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\r\n")
    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    exporter = WireOTLPSpanExporter(f"http://127.0.0.1:{port}/v1/traces", RESOURCE, SCOPE, timeout=5)
    try:
        assert exporter.export([_span()]) is True
    finally:
        exporter.shutdown()
        listener.close()
    thread.join(5)
