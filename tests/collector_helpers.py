"""Shared builders for the collector tests: OTLP requests and a span-log reader."""

from __future__ import annotations

import os
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from gatewatch.spanlog import Message, SpanLog, next_offsets


def make_request(spans: int = 16, per_trace: int = 4, attributes: int = 10, resources: int = 1,
                 scopes: int = 1) -> ExportTraceServiceRequest:
    """A request whose traces cross resources and scopes: span i belongs to trace i // per_trace."""
    request = ExportTraceServiceRequest()
    trace_ids = [os.urandom(16) for _ in range((spans + per_trace - 1) // per_trace)]
    blocks = []
    for r in range(resources):
        resource_spans = request.resource_spans.add(schema_url=f"https://schema/{r}")
        resource_spans.resource.attributes.add(key="service.name").value.string_value = f"svc-{r}"
        for s in range(scopes):
            scope_spans = resource_spans.scope_spans.add(schema_url=f"https://scope-schema/{s}")
            scope_spans.scope.name = f"scope-{s}"
            blocks.append(scope_spans)
    for i in range(spans):
        span = blocks[i % len(blocks)].spans.add()
        fill_span(span, trace_ids[i // per_trace], attributes)
    return request


def fill_span(span: Span, trace_id: bytes, attributes: int = 10) -> Span:
    """Give `span` valid ids, times, a name and `attributes` string attributes."""
    span.trace_id = trace_id
    span.span_id = os.urandom(8)
    span.name = "GET /api/items"
    span.kind = Span.SPAN_KIND_SERVER
    span.start_time_unix_nano = time.time_ns()
    span.end_time_unix_nano = span.start_time_unix_nano + 1_000_000
    for a in range(attributes):
        span.attributes.add(key=f"attr.{a}").value.string_value = f"value-{a}"
    return span


def spans_of(request: ExportTraceServiceRequest) -> list[Span]:
    """Every span of a request, in order."""
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def read_messages(log: SpanLog, topic: str, group: str, want_spans: int, timeout_s: float = 60.0) -> list[Message]:
    """Consume `topic` until `want_spans` spans arrived (or the timeout), commit, return the messages."""
    consumer = log.consumer(topic, group)
    got: list[Message] = []
    spans = 0
    deadline = time.monotonic() + timeout_s
    while spans < want_spans and time.monotonic() < deadline:
        batch = consumer.poll(1000, 0.5)
        got.extend(batch)
        spans += sum(len(spans_of(ExportTraceServiceRequest.FromString(m.value))) for m in batch)
    if got:
        consumer.commit(next_offsets(got))
    consumer.close()
    return got
