"""Fuzzing OTLP decoding in the collector and the pipeline: no crash, no hang, no unbounded memory."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings

from tests.faults.fuzz_otlp import (
    MAX_BODY,
    CollectorFuzzer,
    collector_bodies,
    compression_bomb,
    pipeline_decode,
    span_log_messages,
)
from tests.faults.harness import Scale

EXAMPLES = Scale.from_env().examples
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def collector():
    return CollectorFuzzer()


@FUZZ
@given(case=collector_bodies())
def test_collector_accepts_or_refuses_cleanly(collector: CollectorFuzzer, case: tuple[bytes, str, str]):
    collector.run(*case)


@FUZZ
@given(data=span_log_messages())
def test_pipeline_decodes_whole_or_poison(data: bytes):
    pipeline_decode(data)


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "lz4", "snappy", "x-snappy-framed"])
def test_bomb_refused_without_inflating(collector: CollectorFuzzer, encoding: str):
    bomb = compression_bomb(encoding, MAX_BODY * 400)  # ~100 MB of zeros in at most ~100 kB
    tracemalloc.start()
    outcome = collector.run(bomb, "application/x-protobuf", encoding)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert outcome == "too_large"
    assert peak < 16 * MAX_BODY, f"inflating a {encoding} bomb peaked at {peak} bytes"


def test_snappy_block_declaring_4_gib_refused_without_allocating(collector: CollectorFuzzer):
    from collector.split import varint

    bomb = varint(2**32 - 1) + b"\x00" * 64  # a block's header declares its uncompressed length
    tracemalloc.start()
    outcome = collector.run(bomb, "application/x-protobuf", "snappy")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert outcome == "too_large" and peak < MAX_BODY


def _field(tag: int, payload: bytes) -> bytes:
    from collector.split import varint

    return bytes([tag]) + varint(len(payload)) + payload


def _deep_request(levels: int) -> bytes:
    value = b""
    for _ in range(levels):  # AnyValue.array_value -> ArrayValue.values -> AnyValue ...
        value = _field(0x2A, _field(0x0A, value))
    ids = b"\x0a\x10" + b"\x01" * 16 + b"\x12\x08" + b"\x02" * 8
    span = ids + _field(0x4A, _field(0x0A, b"k") + _field(0x12, value))
    return _field(0x0A, _field(0x12, _field(0x12, span)))


def test_deeply_nested_values_refused_not_crashing(collector: CollectorFuzzer):
    assert collector.run(_deep_request(5), "application/x-protobuf", "") == "accepted"
    assert collector.run(_deep_request(5_000), "application/x-protobuf", "") == "invalid"
    deep_json = b'{"resourceSpans":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert collector.run(deep_json, "application/json", "") == "invalid"
    assert pipeline_decode(_deep_request(5_000)) == -1


def test_timestamps_past_int64_refused_by_collector(collector: CollectorFuzzer):
    # found by fuzzing: accepted (200) by the collector, then dead-lettered by the pipeline
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=2**63, end_time_unix_nano=2**64 - 1)
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    assert collector.run(request.SerializeToString(), "application/x-protobuf", "") == "invalid"
