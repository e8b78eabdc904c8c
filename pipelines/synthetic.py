"""Synthetic OTLP trace requests (gateway-like spans with ~10 attributes) for benchmarks and tests."""

from __future__ import annotations

import random
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROUTES = ("/api/items/{id}", "/api/login", "/api/cart", "/api/checkout")
METHODS = ("GET", "GET", "POST", "PUT")
STATUSES = (200, 200, 200, 201, 404, 429, 500, 503)


def synthetic_request(spans: int, seed: int = 0, service: str = "gateway", start_ns: int | None = None) -> bytes:
    """One serialized ExportTraceServiceRequest with `spans` SERVER spans of ~10 attributes each."""
    rnd = random.Random(seed)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource = (("service.name", service), ("host.name", f"host-{seed % 4}"), ("telemetry.sdk.language", "python"))
    for key, value in resource:
        attribute = resource_spans.resource.attributes.add()
        attribute.key, attribute.value.string_value = key, value
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = "gatewatch.proxy", "0.1.0"
    base = time.time_ns() if start_ns is None else start_ns
    for i in range(spans):
        route = rnd.randrange(len(ROUTES))
        span = scope_spans.spans.add()
        span.trace_id, span.span_id = rnd.randbytes(16), rnd.randbytes(8)
        span.name, span.kind = f"{METHODS[route]} {ROUTES[route]}", 2
        span.start_time_unix_nano = base + i * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + rnd.randint(100_000, 50_000_000)
        status = rnd.choice(STATUSES)
        for key, value in (
            ("http.request.method", METHODS[route]), ("http.route", ROUTES[route]),
            ("url.path", ROUTES[route].replace("{id}", str(rnd.randint(1, 999)))),
            ("client.address", f"203.0.113.{rnd.randint(1, 50)}"), ("user_agent.original", "Mozilla/5.0"),
            ("server.address", "shop.example"), ("network.protocol.version", "1.1"),
            ("enduser.id", f"user-{rnd.randint(1, 20)}" if rnd.random() < 0.5 else ""),
        ):
            attribute = span.attributes.add()
            attribute.key, attribute.value.string_value = key, value
        attribute = span.attributes.add()
        attribute.key, attribute.value.int_value = "http.response.status_code", status
        attribute = span.attributes.add()
        attribute.key, attribute.value.int_value = "http.request.body.size", rnd.randint(0, 4096)
        if status >= 500:
            span.status.code = 2
    return request.SerializeToString()
