"""OTLP/HTTP and OTLP/gRPC receivers on the embedded span log: success, bad input, backpressure, shutdown."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator, Sequence

import cramjam
import grpc
import httpx
import lz4.frame
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.codec import zstd
from collector.grpc_receiver import RETRY_INFO_KEY
from collector.service import CollectorService
from collector.split import varint
from gatewatch.errors import SpanLogUnavailable
from gatewatch.settings import Settings
from gatewatch.spanlog import EmbeddedLog, LogConsumer, LogProducer, Message, SpanLog
from tests.collector_helpers import make_request, read_messages, spans_of
from tests.conftest import unique

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
MAX_BODY = 64 * 1024


class FailingLog(SpanLog):
    """A span log whose writes fail (Kafka down) until `fail` is cleared; then it is an EmbeddedLog."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.fail = False
        self.delay_s = delay_s
        self.inner = EmbeddedLog()

    def producer(self, topic: str) -> LogProducer:
        log, inner = self, self.inner.producer(topic)

        class Producer(LogProducer):
            def send(self, messages: Sequence[Message], timeout_s: float = 10.0) -> None:
                time.sleep(log.delay_s)
                if log.fail:
                    raise SpanLogUnavailable("broker down")
                inner.send(messages, timeout_s)

            def healthy(self) -> bool:
                return True

        return Producer()

    def consumer(self, topic: str, group: str) -> LogConsumer:
        return self.inner.consumer(topic, group)


def start_collector(settings: Settings, span_log: SpanLog) -> CollectorService:
    service = CollectorService(
        settings.model_copy(update={"collector_http_port": 0, "collector_grpc_port": 0,
                                    "collector_max_body_bytes": MAX_BODY, "collector_retry_after_s": 2}),
        span_log=span_log,
    )
    service.start()
    return service


@pytest.fixture
def span_log() -> FailingLog:
    return FailingLog()


@pytest.fixture
def collector(settings: Settings, span_log: FailingLog) -> Iterator[CollectorService]:
    service = start_collector(settings, span_log)
    yield service
    service.stop(5.0)


def post(service: CollectorService, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{service.http_endpoint}/v1/traces", content=body, headers=headers, timeout=30)


def grpc_export(service: CollectorService, body: bytes) -> tuple[bytes, grpc.RpcError | None]:
    with grpc.insecure_channel(service.grpc_endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        try:
            return export(body, timeout=30), None
        except grpc.RpcError as exc:
            return b"", exc


def assert_serving(service: CollectorService) -> None:
    """A valid request still succeeds on both protocols."""
    assert post(service, make_request(spans=2).SerializeToString(), PROTOBUF).status_code == 200
    assert grpc_export(service, make_request(spans=2).SerializeToString())[1] is None


def test_protobuf_gzip_json_and_grpc_reach_the_span_log(collector, span_log, settings):
    requests = [make_request(spans=12, per_trace=3, resources=2, scopes=2) for _ in range(4)]
    assert post(collector, requests[0].SerializeToString(), PROTOBUF).content == b""
    gz = post(collector, gzip.compress(requests[1].SerializeToString()), {**PROTOBUF, "content-encoding": "gzip"})
    assert gz.status_code == 200
    document = json.loads(json_format.MessageToJson(requests[2]))
    for span in (s for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]):
        for name in ("traceId", "spanId"):  # OTLP/JSON ids are hex, not protobuf's base64
            span[name] = base64.b64decode(span[name]).hex()
    as_json = post(collector, json.dumps(document).encode(), JSON)
    assert (as_json.status_code, as_json.json(), as_json.headers["content-type"]) == (200, {}, "application/json")
    response, error = grpc_export(collector, requests[3].SerializeToString())
    assert error is None and ExportTraceServiceResponse.FromString(response) == ExportTraceServiceResponse()

    messages = read_messages(span_log, settings.spans_topic, unique("g"), want_spans=48, timeout_s=5)
    got = {s.span_id: s for m in messages for s in spans_of(ExportTraceServiceRequest.FromString(m.value))}
    sent = {s.span_id: s for r in requests for s in spans_of(r)}
    assert got == sent
    for message in messages:
        assert {s.trace_id.hex().encode() for s in spans_of(ExportTraceServiceRequest.FromString(message.value))} == {
            message.key}


def test_zstd_lz4_and_snappy_bodies_reach_the_span_log(collector, span_log, settings):
    """The encodings the OpenTelemetry Collector's otlphttp exporter can send besides gzip."""
    requests = [make_request(spans=6, per_trace=3) for _ in range(6)]
    bodies = [
        ("zstd", zstd.compress(requests[0].SerializeToString())),
        ("lz4", lz4.frame.compress(requests[1].SerializeToString())),
        ("zlib", zlib.compress(requests[2].SerializeToString())),
        ("snappy", bytes(cramjam.snappy.compress_raw(requests[3].SerializeToString()))),
        ("snappy", bytes(cramjam.snappy.compress(requests[4].SerializeToString()))),
        ("x-snappy-framed", bytes(cramjam.snappy.compress(requests[5].SerializeToString()))),
    ]
    for encoding, body in bodies:
        assert post(collector, body, {**PROTOBUF, "content-encoding": encoding}).status_code == 200, encoding

    messages = read_messages(span_log, settings.spans_topic, unique("z"), want_spans=36, timeout_s=5)
    got = {s.span_id: s for m in messages for s in spans_of(ExportTraceServiceRequest.FromString(m.value))}
    assert got == {s.span_id: s for r in requests for s in spans_of(r)}


def _truncated() -> bytes:
    body = make_request(spans=4).SerializeToString()
    return body[: len(body) // 2]


def _ids_all_invalid() -> bytes:
    request = make_request(spans=3)
    for span in spans_of(request):
        span.trace_id = bytes(16)
    return request.SerializeToString()


BAD_HTTP = {
    "truncated protobuf": (_truncated(), PROTOBUF, 400),
    "wrong content type": (make_request().SerializeToString(), {"content-type": "text/plain"}, 415),
    "no content type": (make_request().SerializeToString(), {}, 415),
    "invalid json": (b'{"resourceSpans": [', JSON, 400),
    "json not an object": (b"[1, 2]", JSON, 400),
    "oversized body": (b"\x00" * (MAX_BODY + 1), PROTOBUF, 413),
    "bad gzip": (b"\x1f\x8b garbage", {**PROTOBUF, "content-encoding": "gzip"}, 400),
    "gzip bomb": (gzip.compress(b"\x00" * (MAX_BODY * 20)), {**PROTOBUF, "content-encoding": "gzip"}, 413),
    "bad zstd": (b"(\xb5/\xfd garbage", {**PROTOBUF, "content-encoding": "zstd"}, 400),
    "zstd bomb": (zstd.compress(b"\x00" * (MAX_BODY * 20)), {**PROTOBUF, "content-encoding": "zstd"}, 413),
    "truncated lz4": (lz4.frame.compress(b"\x01" * 5000)[:-8], {**PROTOBUF, "content-encoding": "lz4"}, 400),
    "lz4 bomb": (lz4.frame.compress(b"\x00" * (MAX_BODY * 20)), {**PROTOBUF, "content-encoding": "lz4"}, 413),
    "unknown content encoding": (make_request().SerializeToString(), {**PROTOBUF, "content-encoding": "br"}, 400),
    "not snappy": (make_request().SerializeToString(), {**PROTOBUF, "content-encoding": "snappy"}, 400),
    "snappy declaring 4 GiB": (varint(2**32 - 1) + b"\x00" * 64, {**PROTOBUF, "content-encoding": "snappy"}, 413),
    "snappy bomb": (
        bytes(cramjam.snappy.compress(b"\x00" * (MAX_BODY * 10))), {**PROTOBUF, "content-encoding": "snappy"}, 413),
    "unframed x-snappy-framed": (
        bytes(cramjam.snappy.compress_raw(b"\x01" * 100)), {**PROTOBUF, "content-encoding": "x-snappy-framed"}, 400),
    "only invalid ids": (_ids_all_invalid(), PROTOBUF, 400),
}


@pytest.mark.parametrize("case", list(BAD_HTTP))
def test_bad_http_input_gets_its_status_and_the_collector_keeps_serving(collector, case):
    body, headers, status = BAD_HTTP[case]
    response = post(collector, body, headers)
    assert response.status_code == status, response.content
    if status in (400, 413) and headers.get("content-type") == "application/x-protobuf":
        message = status_pb2.Status.FromString(response.content)
        assert message.message and message.code in (3, 8)
    assert_serving(collector)


def test_chunked_body_over_the_limit_is_413(collector):
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"\x00" * (MAX_BODY // 2)

    assert post(collector, chunks(), PROTOBUF).status_code == 413  # type: ignore[arg-type]
    assert_serving(collector)


def test_invalid_json_error_body_is_a_json_status(collector):
    response = post(collector, b"{nope", JSON)
    assert response.status_code == 400 and response.json()["code"] == 3 and "JSON" in response.json()["message"]


def test_invalid_ids_give_partial_success_on_both_protocols(collector):
    request = make_request(spans=6, per_trace=2)
    spans = spans_of(request)
    spans[0].trace_id = bytes(16)
    spans[1].span_id = b"\x01" * 7
    for answer in (post(collector, request.SerializeToString(), PROTOBUF).content,
                   grpc_export(collector, request.SerializeToString())[0]):
        partial = ExportTraceServiceResponse.FromString(answer).partial_success
        assert partial.rejected_spans == 2 and "invalid trace_id" in partial.error_message
    spans_json = [{"traceId": "zz", "spanId": "0102030405060708"},
                  {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708"}]
    document = {"resourceSpans": [{"scopeSpans": [{"spans": spans_json}]}]}
    json_answer = post(collector, json.dumps(document).encode(), JSON)
    assert json_answer.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_bad_grpc_input_gets_its_status_and_the_collector_keeps_serving(collector):
    for body, code in ((_truncated(), grpc.StatusCode.INVALID_ARGUMENT),
                       (_ids_all_invalid(), grpc.StatusCode.INVALID_ARGUMENT),
                       (b"\x00" * (MAX_BODY + 1), grpc.StatusCode.RESOURCE_EXHAUSTED)):
        _, error = grpc_export(collector, body)
        assert error is not None and error.code() == code
        assert_serving(collector)


def test_unavailable_span_log_gets_503_and_unavailable_with_retry_hints(collector, span_log):
    span_log.fail = True
    response = post(collector, make_request().SerializeToString(), PROTOBUF)
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    _, error = grpc_export(collector, make_request().SerializeToString())
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    retry = RetryInfo.FromString(dict(error.trailing_metadata())[RETRY_INFO_KEY])
    assert retry.retry_delay.seconds == 2
    assert httpx.get(f"{collector.http_endpoint}/readyz").status_code == 503
    span_log.fail = False
    assert_serving(collector)
    assert httpx.get(f"{collector.http_endpoint}/readyz").status_code == 200


def test_full_span_log_gets_429(settings):
    service = start_collector(settings, EmbeddedLog(capacity=2))  # fewer slots than the request's traces
    try:
        response = post(service, make_request(spans=8, per_trace=1).SerializeToString(), PROTOBUF)
        assert response.status_code == 429 and response.headers["retry-after"] == "2"
        _, error = grpc_export(service, make_request(spans=8, per_trace=1).SerializeToString())
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        service.stop(5.0)


def test_health_ready_metrics_and_other_paths(collector):
    base = collector.http_endpoint
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
    assert httpx.get(f"{base}/v1/traces").status_code == 405
    assert httpx.get(f"{base}/nope").status_code == 404
    post(collector, make_request(spans=5).SerializeToString(), PROTOBUF)
    metrics = httpx.get(f"{base}/metrics").text
    for name in ("spans_received_total", "spans_accepted_total", "received_bytes_total",
                 "span_log_latency_seconds_bucket", "queue_depth", "requests_total"):
        assert f"gatewatch_collector_{name}" in metrics
    assert 'gatewatch_collector_spans_accepted_total{protocol="http"} 5.0' in metrics


def test_graceful_stop_answers_in_flight_requests_and_loses_nothing(settings):
    span_log = FailingLog(delay_s=0.5)
    service = start_collector(settings, span_log)
    requests = [make_request(spans=4, per_trace=2) for _ in range(6)]
    statuses: list[int] = []

    def send(request: ExportTraceServiceRequest) -> None:
        statuses.append(post(service, request.SerializeToString(), PROTOBUF).status_code)

    threads = [threading.Thread(target=send, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    depth = service.metrics.registry.get_sample_value
    while (depth("gatewatch_collector_queue_depth") or 0) < len(requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    service.stop(10.0)
    for thread in threads:
        thread.join(10)
    assert statuses == [200] * len(requests)
    messages = read_messages(span_log, settings.spans_topic, unique("g"), want_spans=24, timeout_s=2)
    assert len({s.span_id for m in messages for s in spans_of(ExportTraceServiceRequest.FromString(m.value))}) == 24
    with pytest.raises(httpx.ConnectError):
        post(service, requests[0].SerializeToString(), PROTOBUF)
