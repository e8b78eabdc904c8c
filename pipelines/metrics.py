"""Prometheus metrics of one pipeline, on a registry of its own (several may share a process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PREFIX = "gatewatch_pipeline_"


class PipelineMetrics:
    """Consumer lag, rows written, batch latency, dead letters, store retries."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumer_lag = Gauge(PREFIX + "consumer_lag", "Span-log messages not yet committed", registry=r)
        self.messages = Counter(PREFIX + "messages", "Span-log messages consumed", registry=r)
        self.rows_written = Counter(PREFIX + "rows_written", "Spans inserted into otel_traces", registry=r)
        self.batches = Counter(PREFIX + "batches", "Batches inserted (one per partition per flush)", registry=r)
        self.dlq = Counter(PREFIX + "dlq_messages", "Messages sent to the dead-letter queue", registry=r)
        self.store_errors = Counter(PREFIX + "store_errors", "Failed store calls (retried)", registry=r)
        self.commit_errors = Counter(PREFIX + "commit_errors", "Offset commits that failed", registry=r)
        self.poll_errors = Counter(PREFIX + "poll_errors", "Span-log polls that failed (retried)", registry=r)
        self.batch_seconds = Histogram(
            PREFIX + "batch_seconds", "Time to insert one batch", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._server: Any = None

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0 = a free port); returns the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
