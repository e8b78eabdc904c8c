"""CollectorService: OTLP/HTTP + OTLP/gRPC receivers writing to the span log, as one Service."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from collector.grpc_receiver import GrpcReceiver
from collector.http_app import OtlpHttpApp
from collector.http_server import HttpServer
from collector.ingest import IngestLimits, Ingestor
from collector.metrics import CollectorMetrics
from collector.readiness import SpanLogReadiness, accepts_connections, bootstrap_addresses
from gatewatch.errors import GatewatchError, SpanLogUnavailable
from gatewatch.settings import Settings
from gatewatch.spanlog import LogProducer, SpanLog, open_span_log
from gatewatch.topics import ensure_topics, topic_specs

log = logging.getLogger(__name__)


class CollectorService:
    """The collector stage; `http_port` / `grpc_port` hold the bound ports once started (0 = ephemeral)."""

    name = "collector"

    def __init__(self, settings: Settings, span_log: SpanLog | None = None, limits: IngestLimits | None = None) -> None:
        self.settings = settings
        self._span_log = span_log
        self.limits = limits or IngestLimits(
            max_message_bytes=settings.collector_max_message_bytes, retry_after_s=settings.collector_retry_after_s
        )
        self.metrics = CollectorMetrics()
        self.http_port = 0
        self.grpc_port = 0
        self._producer: LogProducer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._http: HttpServer | None = None
        self._grpc: GrpcReceiver | None = None

    @property
    def http_endpoint(self) -> str:
        """Base URL of the OTLP/HTTP receiver (append /v1/traces)."""
        return f"http://{self.settings.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        """host:port of the OTLP/gRPC receiver."""
        return f"{self.settings.host}:{self.grpc_port}"

    def start(self) -> None:
        """Open the span log, bind both receivers; raise GatewatchError if any of it fails."""
        settings = self.settings
        if self._span_log is None and settings.kafka:
            _ensure_spans_topic(settings)
        span_log = self._span_log or open_span_log(settings)
        self._producer = span_log.producer(settings.spans_topic)
        bootstrap = getattr(span_log, "bootstrap", "")  # KafkaLog's; readiness probes its brokers
        ingestor = Ingestor(self._producer, SpanLogReadiness(self._producer, bootstrap), self.metrics, self.limits)
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="collector-http")
        app = OtlpHttpApp(ingestor, self.metrics, self._executor, settings.collector_max_body_bytes)
        try:
            self._http = HttpServer(app, settings.host, settings.collector_http_port)
            self._http.start()
            self.http_port = self._http.port
            self._grpc = GrpcReceiver(
                ingestor, self.metrics, settings.host, settings.collector_grpc_port, settings.collector_max_body_bytes
            )
            self._grpc.start()
            self.grpc_port = self._grpc.port
        except GatewatchError:
            self.stop(1.0)
            raise
        log.info("collector: OTLP/HTTP on %s, OTLP/gRPC on %s -> %s", self.http_endpoint, self.grpc_endpoint,
                 settings.kafka or "embedded span log")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, finish in-flight exports (each waits for the span log), flush, close."""
        grpc_done = self._grpc.shutdown(timeout_s) if self._grpc is not None else None
        if self._http is not None:
            self._http.stop(timeout_s)
            self._http = None
        if grpc_done is not None:
            grpc_done.wait(timeout_s + 1.0)
            self._grpc = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._producer is not None:
            self._producer.close(timeout_s)
            self._producer = None


def _ensure_spans_topic(settings: Settings) -> None:
    """Create otlp_spans with the contract's partitioning if missing (not left to auto-creation)."""
    from kafka.errors import KafkaError

    if not accepts_connections(bootstrap_addresses(settings.kafka), timeout_s=2.0):
        raise SpanLogUnavailable(f"no Kafka broker accepts connections at {settings.kafka}: check GATEWATCH_KAFKA")
    try:
        ensure_topics(settings.kafka, [spec for spec in topic_specs(settings) if spec.name == settings.spans_topic])
    except KafkaError as exc:
        raise SpanLogUnavailable(
            f"Kafka at {settings.kafka} is not reachable ({type(exc).__name__}): check GATEWATCH_KAFKA"
        ) from None
