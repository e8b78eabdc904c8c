"""The proxies' span recording (`proxy.spans`) against the OpenTelemetry SDK pieces it stands in
for: W3C trace-context parsing, the parent-based ratio sampler, ids and flags, resource attributes;
and the batch processor's batching, bounds and shutdown."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.policy import Headers
from proxy.spans import (
    SERVER,
    BatchSpanProcessor,
    FinishedSpan,
    ParentBasedRatio,
    Tracer,
    parse_parent,
    parse_tracestate,
    resource_attributes,
)

TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENTS = [
    f"00-{TRACE_HEX}-b7ad6b7169203331-01", f"00-{TRACE_HEX}-b7ad6b7169203331-00",
    f"00-{TRACE_HEX}-b7ad6b7169203331-03", f" 00-{TRACE_HEX}-b7ad6b7169203331-01\t",
    f"01-{TRACE_HEX}-b7ad6b7169203331-01-future", f"00-{TRACE_HEX}-b7ad6b7169203331-01-extra",
    f"ff-{TRACE_HEX}-b7ad6b7169203331-01", f"00-{TRACE_HEX.upper()}-b7ad6b7169203331-01",
    f"00-{'0' * 32}-b7ad6b7169203331-01", f"00-{TRACE_HEX}-{'0' * 16}-01", f"00-{TRACE_HEX}-b7ad6b716920333-01",
    f"00-{TRACE_HEX}1-b7ad6b7169203331-01", "00--b7ad6b7169203331-01", "", "garbage",
]
TRACESTATES = [
    "", "v=1", "a=1,b=2", " a=1 , b=2 ", "a=1,,b=2", "tenant@vendor=x", "A=1", "a=1,a=2", "a=", "a=b=c",
    ",".join(f"k{n}=v" for n in range(32)), ",".join(f"k{n}=v" for n in range(33)), "a=1\tb", "1a=x",
]


def _sdk_parent(header: str) -> trace.SpanContext | None:
    context = TraceContextTextMapPropagator().extract({"traceparent": header})
    parent = trace.get_current_span(context).get_span_context()
    return parent if parent.is_valid else None


@pytest.mark.parametrize("header", TRACEPARENTS)
def test_traceparent_is_read_as_the_sdk_reads_it(header: str) -> None:
    ours, sdk = parse_parent(Headers([("traceparent", header)])), _sdk_parent(header)
    assert (ours is None) == (sdk is None)
    if ours is not None and sdk is not None:
        assert (ours.trace_id, ours.span_id, ours.flags) == (sdk.trace_id, sdk.span_id, sdk.trace_flags)


@pytest.mark.parametrize("header", TRACESTATES)
def test_tracestate_is_kept_when_the_sdk_keeps_it(header: str) -> None:
    sdk = TraceState.from_header([header])
    assert parse_tracestate(header) == ",".join(f"{key}={value}" for key, value in sdk.items())


def test_sampling_decisions_match_the_sdk_sampler() -> None:
    rng = random.Random(7)
    for ratio in (0.0, 0.001, 0.25, 0.5, 0.999, 1.0):
        ours, sdk = ParentBasedRatio(ratio), ParentBased(TraceIdRatioBased(ratio))
        for _ in range(500):
            trace_id = rng.getrandbits(128)
            expected = sdk.should_sample(None, trace_id, "GET", SpanKind.SERVER).decision.is_sampled()
            assert ours.should_sample(None, trace_id) is expected
    with pytest.raises(ValueError, match="sample ratio"):
        ParentBasedRatio(1.5)


def test_new_spans_get_fresh_ids_and_flags_like_the_sdk() -> None:
    tracer = Tracer(BatchSpanProcessor(Memory(), schedule_delay_s=60))
    root = Headers()
    started = tracer.start(root)
    assert started is not None and started.parent is None and started.trace_id and started.span_id
    assert root.get("traceparent") == f"00-{started.trace_id:032x}-{started.span_id:016x}-03"  # sampled, random id
    child = Headers([("traceparent", f"00-{TRACE_HEX}-b7ad6b7169203331-01"), ("tracestate", "v=1")])
    continued = tracer.start(child)
    assert continued is not None and continued.parent is not None
    assert continued.trace_id == int(TRACE_HEX, 16) and continued.parent.trace_state == "v=1"
    assert (child.get("traceparent") or "").endswith("-01") and continued.span_id != started.span_id
    unsampled = Headers([("traceparent", f"00-{TRACE_HEX}-b7ad6b7169203331-00")])
    assert tracer.start(unsampled) is None and (unsampled.get("traceparent") or "").endswith("-00")
    tracer.shutdown(5)


def test_resource_attributes_follow_the_sdk_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%20b,bad,service.name=env")
    assert resource_attributes("gateway")["service.name"] == "gateway"
    attributes = resource_attributes("")
    assert attributes["service.name"] == "env" and attributes["team"] == "a b"
    assert attributes["deployment.environment"] == "prod" and "bad" not in attributes
    assert Resource.create({"service.name": "gateway"}).attributes["deployment.environment"] == "prod"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "named")
    assert resource_attributes("")["service.name"] == "named"


class Memory:
    """An exporter that keeps batches; `fail` makes its next export raise."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[FinishedSpan]] = []
        self.fail = fail
        self.exported = threading.Event()
        self.raised = threading.Event()
        self.closed = False

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        if self.fail:
            self.fail = False
            self.raised.set()
            raise RuntimeError("exporter bug")
        self.batches.append(list(spans))
        self.exported.set()
        return True

    def shutdown(self) -> None:
        self.closed = True


def _span(n: int) -> FinishedSpan:
    return FinishedSpan(f"GET /{n}", SERVER, 1, n + 1, None, 1, 2, {}, False)


def test_full_batches_are_exported_at_once_and_the_rest_at_shutdown() -> None:
    exporter = Memory()
    processor = BatchSpanProcessor(exporter, max_batch=4, schedule_delay_s=60)
    for n in range(10):
        processor.on_end(_span(n))
    assert exporter.exported.wait(5)
    processor.shutdown(5)
    assert [len(batch) for batch in exporter.batches] == [4, 4, 2] and exporter.closed
    assert [span.span_id for batch in exporter.batches for span in batch] == list(range(1, 11))


def test_after_a_full_batch_the_remainder_waits_to_fill_up() -> None:
    exporter = Memory()
    processor = BatchSpanProcessor(exporter, max_batch=4, schedule_delay_s=60)
    for n in range(6):
        processor.on_end(_span(n))
    assert exporter.exported.wait(5)
    time.sleep(0.2)  # a drain of everything queued would have sent the two left by now
    assert [len(batch) for batch in exporter.batches] == [4] and len(processor._queue) == 2
    processor.shutdown(5)
    assert [len(batch) for batch in exporter.batches] == [4, 2]


class Encoding(Memory):
    """An `EncodingSpanExporter`: spans are encoded as they end, batches arrive as bytes."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(fail)
        self.encoded_on: list[int] = []
        self.encoded_batches: list[list[bytes]] = []

    def encode(self, span: FinishedSpan) -> bytes:
        self.encoded_on.append(threading.get_ident())
        return span.name.encode()

    def export_encoded(self, spans: Sequence[bytes]) -> bool:
        self.encoded_batches.append(list(spans))
        return self.export([])


def test_an_encoding_exporter_gets_spans_encoded_as_they_end_and_outcomes_are_counted() -> None:
    exporter, outcomes = Encoding(fail=True), Counter[str]()
    processor = BatchSpanProcessor(exporter, max_queue=5, max_batch=2, schedule_delay_s=60,
                                   on_outcome=lambda outcome, count: outcomes.update({outcome: count}))
    processor.on_end(_span(0))
    processor.on_end(_span(1))
    assert exporter.raised.wait(5)  # that batch of 2 failed
    for n in range(2, 9):
        processor.on_end(_span(n))
    processor.shutdown(5)
    assert exporter.encoded_on and set(exporter.encoded_on) == {threading.get_ident()}  # on the caller's thread
    exported = [span for batch in exporter.encoded_batches[1:] for span in batch]
    assert exported[0] == b"GET /2" and len(exported) + outcomes["dropped"] == 7
    assert outcomes == {"failed": 2, "exported": len(exported), "dropped": 7 - len(exported)}
    assert exporter.batches and not exporter.batches[0]  # export() itself never saw a FinishedSpan


def test_a_partial_batch_goes_out_after_the_schedule_delay() -> None:
    exporter = Memory()
    processor = BatchSpanProcessor(exporter, max_batch=32, schedule_delay_s=0.05)
    processor.on_end(_span(0))
    assert exporter.exported.wait(5) and len(exporter.batches[0]) == 1
    processor.shutdown(5)


def test_a_full_queue_drops_and_counts() -> None:
    exporter = Memory()
    processor = BatchSpanProcessor(exporter, max_queue=3, max_batch=100, schedule_delay_s=60)
    for n in range(5):
        processor.on_end(_span(n))
    processor.shutdown(5)
    assert processor.dropped == 2 and exporter.batches == [[_span(0), _span(1), _span(2)]]


def test_an_exporter_error_loses_its_batch_but_does_not_stop_export() -> None:
    exporter = Memory(fail=True)
    processor = BatchSpanProcessor(exporter, max_batch=1, schedule_delay_s=60)
    processor.on_end(_span(0))
    assert exporter.raised.wait(5)
    processor.on_end(_span(1))
    assert exporter.exported.wait(5)
    processor.shutdown(5)
    assert exporter.batches == [[_span(1)]]


class Unreachable:
    """An exporter stuck retrying (an unreachable collector) until it is shut down."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        self.stopped.wait(30)
        return False

    def shutdown(self) -> None:
        self.stopped.set()


def test_shutdown_is_bounded_when_the_collector_is_unreachable() -> None:
    exporter = Unreachable()
    processor = BatchSpanProcessor(exporter, max_batch=1, schedule_delay_s=60)
    for n in range(5):
        processor.on_end(_span(n))
    started = threading.Event()

    def shut_down() -> None:
        started.set()
        processor.shutdown(0.2)

    thread = threading.Thread(target=shut_down)
    thread.start()
    thread.join(10)
    assert started.is_set() and not thread.is_alive() and exporter.stopped.is_set()
    assert not processor._export_thread.is_alive()  # the queued batches failed fast once the exporter stopped
