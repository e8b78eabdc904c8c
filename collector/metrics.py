"""The collector's Prometheus metrics, in a registry of its own per collector instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "gatewatch_collector_"


class CollectorMetrics:
    """Spans in and out, rejections by reason, bytes, span-log latency and queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(PREFIX + "requests", "Export requests by protocol and outcome",
                                ["protocol", "outcome"], registry=r)
        self.spans_received = Counter(PREFIX + "spans_received", "Spans in decoded export requests",
                                      ["protocol"], registry=r)
        self.spans_accepted = Counter(PREFIX + "spans_accepted", "Spans durably written to the span log",
                                      ["protocol"], registry=r)
        self.spans_rejected = Counter(PREFIX + "spans_rejected", "Spans refused, by reason",
                                      ["protocol", "reason"], registry=r)
        self.bytes_received = Counter(PREFIX + "received_bytes", "Request body bytes as sent (compressed)",
                                      ["protocol"], registry=r)
        self.messages = Counter(PREFIX + "span_log_messages", "Messages written to the span log", registry=r)
        self.send_latency = Histogram(
            PREFIX + "span_log_latency_seconds", "Time for the span log to durably accept one request's messages",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=r,
        )
        self.queue_depth = Gauge(PREFIX + "queue_depth", "Export requests being decoded or waiting for the span log",
                                 registry=r)
        self.ready = Gauge(PREFIX + "span_log_ready", "1 while the span log is reachable", registry=r)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
