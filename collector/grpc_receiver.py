"""The OTLP/gRPC receiver: opentelemetry.proto.collector.trace.v1.TraceService/Export.

Requests arrive as raw bytes (no generated stubs needed) and go through the same decode and
ingest path as OTLP/HTTP. Refusals carry a google.rpc.RetryInfo in the trailing metadata, which
OTLP exporters use as their retry delay.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo

from collector.codec import Encoding, decode_protobuf, encode_response
from collector.errors import Backpressure, RequestRejected
from collector.ingest import Ingestor
from collector.metrics import CollectorMetrics
from gatewatch.errors import GatewatchError

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
PROTOCOL = "grpc"
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


class GrpcReceiver:
    """A threaded grpcio server for TraceService/Export."""

    def __init__(
        self, ingestor: Ingestor, metrics: CollectorMetrics, host: str, port: int, max_body_bytes: int,
        workers: int = 16,
    ) -> None:
        self._ingestor, self._metrics = ingestor, metrics
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._max_body = max_body_bytes
        self._workers = workers
        self._server: grpc.Server | None = None
        self.port = 0

    def start(self) -> None:
        """Bind and start serving; raise GatewatchError if the port cannot be bound."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="collector-grpc"),
            options=[
                ("grpc.max_receive_message_length", self._max_body),
                ("grpc.so_reuseport", 0),
            ],
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # bytes in, bytes out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        try:
            self.port = server.add_insecure_port(self._address)
        except RuntimeError as exc:
            raise GatewatchError(f"cannot listen for OTLP/gRPC on {self._address}: {exc}") from None
        if not self.port:
            raise GatewatchError(f"cannot listen for OTLP/gRPC on {self._address}: address in use?")
        server.start()
        self._server = server

    def shutdown(self, timeout_s: float = 10.0) -> threading.Event:
        """Refuse new RPCs at once; the event is set when running ones finished (at most `timeout_s`)."""
        server, self._server = self._server, None
        if server is None:
            done = threading.Event()
            done.set()
            return done
        return server.stop(grace=timeout_s)

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            with self._ingestor.admitted():
                self._metrics.bytes_received.labels(PROTOCOL).inc(len(body))
                outcome = self._ingestor.export(decode_protobuf(body), PROTOCOL)
        except RequestRejected as exc:
            self._metrics.requests.labels(PROTOCOL, exc.reason).inc()
            if isinstance(exc, Backpressure):
                delay = RetryInfo(retry_delay=Duration(seconds=exc.retry_after_s))
                context.set_trailing_metadata(((RETRY_INFO_KEY, delay.SerializeToString()),))
            context.abort(exc.grpc_code, exc.message)
        except Exception:
            log.exception("OTLP/gRPC export failed")
            self._metrics.requests.labels(PROTOCOL, "internal_error").inc()
            context.abort(grpc.StatusCode.INTERNAL, "internal collector error")
        self._metrics.requests.labels(PROTOCOL, "partial" if outcome.rejected else "ok").inc()
        return encode_response(Encoding.PROTOBUF, outcome.rejected, outcome.error_message)
