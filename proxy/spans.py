"""The proxies' span recording without the OpenTelemetry SDK: W3C trace context in and out, a
parent-based ratio sampler, random ids, and finished spans batched to an exporter by one thread.

It has the SDK's shape (a `Sampler`, a `SpanProcessor`, a `SpanExporter`) and its behaviour for
what a proxy records: `ParentBased(TraceIdRatioBased(ratio))` sampling, `RandomIdGenerator` ids
(with the W3C random-trace-id flag), `BatchSpanProcessor` batching, `Resource.create` attributes
(`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`). Tests compare each piece with the SDK's.
Why not the SDK: its API and SDK modules cost a sidecar ~2.5 MB of its 30 MB RSS budget, and a
proxy records one or two spans per request that only ever need ids, a sampling decision, scalar
attributes and an end time: no live `Span`, no context, no locks on the request path.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import unquote

from proxy.policy import AttributeValue, Headers

log = logging.getLogger(__name__)

# OTLP `Span.SpanKind` values (the SDK's SpanKind enum is these minus one).
SERVER: Final = 2
CLIENT: Final = 3

SAMPLED: Final = 0x01
RANDOM_TRACE_ID: Final = 0x02  # W3C Trace Context level 2: the trace id's right 56 bits are random

_TRACEPARENT: Final = re.compile(r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*")
# A tracestate list member (W3C Trace Context: simple or multi-tenant key, printable value).
_MEMBER: Final = re.compile(
    r"[ \t]*((?:[a-z][_0-9a-z*/-]{0,255})|(?:[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13}))"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])[ \t]*"
)
_MAX_TRACESTATE_MEMBERS: Final = 32
_LOW_64: Final = (1 << 64) - 1
_random_bits: Final = random.getrandbits
_wall_clock_ns: Final = time.time_ns


class Parent(NamedTuple):
    """The remote parent a request carries: ids, flags and its (validated) `tracestate`."""

    trace_id: int
    span_id: int
    flags: int
    trace_state: str


class Started:
    """What a recorded span fixes when it starts: its identity, its parent, its start time."""

    # Compiled classes rather than NamedTuples (this and FinishedSpan, one of each a request): a
    # NamedTuple is built by interpreted code, ~0.3 us each.
    def __init__(self, trace_id: int, span_id: int, flags: int, parent: Parent | None, start_ns: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.parent = parent
        self.start_ns = start_ns


class FinishedSpan:
    """One finished span, as the exporter encodes it (resource and scope belong to the exporter)."""

    def __init__(self, name: str, kind: int, trace_id: int, span_id: int, parent: Parent | None, start_ns: int,
                 end_ns: int, attributes: Mapping[str, AttributeValue], error: bool) -> None:
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent = parent
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.error = error

    def _fields(self) -> tuple[object, ...]:
        return (self.name, self.kind, self.trace_id, self.span_id, self.parent, self.start_ns, self.end_ns,
                self.attributes, self.error)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FinishedSpan) and self._fields() == other._fields()

    def __repr__(self) -> str:
        return f"FinishedSpan({self.name!r}, kind={self.kind}, span_id={self.span_id:016x})"


def parse_tracestate(value: str | None) -> str:
    """`tracestate` normalised (members joined by ","), or "" when absent or any member is invalid."""
    if not value:
        return ""
    members, keys = [], set()
    for member in value.split(","):
        if not member.strip(" \t"):
            continue
        match = _MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return ""
        keys.add(match.group(1))
        members.append(f"{match.group(1)}={match.group(2)}")
    return ",".join(members) if len(members) <= _MAX_TRACESTATE_MEMBERS else ""


def parse_parent(headers: Headers) -> Parent | None:
    """The valid W3C parent in `traceparent` (and its `tracestate`), or None."""
    incoming = headers.get("traceparent")
    if incoming is None:
        return None
    match = _TRACEPARENT.fullmatch(incoming)
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, extra = match.groups()
    if version == "ff" or (version == "00" and extra):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return Parent(trace_id, span_id, int(flags_hex, 16), parse_tracestate(headers.get("tracestate")))


# `-ff` for each flags byte: formatting ints with `:032x` took ~1 us a span, a third of its start.
_FLAG_SUFFIXES: Final = tuple(f"-{flags:02x}" for flags in range(256))


def traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The `traceparent` value naming this span as the parent."""
    # an f-string: compiled, one new string where `+` made four
    return f"00-{trace_id.to_bytes(16, 'big').hex()}-{span_id.to_bytes(8, 'big').hex()}{_FLAG_SUFFIXES[flags & 0xFF]}"


class Sampler(Protocol):
    """Decides whether a new span is recorded (and flagged sampled for the next hop)."""

    def should_sample(self, parent: Parent | None, trace_id: int) -> bool:
        """True to record the span."""
        ...


class ParentBasedRatio:
    """The SDK's `ParentBased(TraceIdRatioBased(ratio))`: follow the parent's sampled flag; sample a
    root when the trace id's low 64 bits fall under `ratio` of their range."""

    def __init__(self, ratio: float = 1.0) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"sample ratio must be within [0, 1] (got {ratio!r})")
        self.bound = round(ratio * (1 << 64))

    def should_sample(self, parent: Parent | None, trace_id: int) -> bool:
        """True to record the span."""
        if parent is not None:
            return bool(parent.flags & SAMPLED)
        return trace_id & _LOW_64 < self.bound


class SpanExporter(Protocol):
    """Sends batches of finished spans somewhere (OTLP/HTTP, memory in tests)."""

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        """Send one batch; False when it was not delivered."""
        ...

    def shutdown(self) -> None:
        """Stop retrying and release connections."""
        ...


class EncodingSpanExporter(SpanExporter, Protocol):
    """An exporter that encodes each span when it ends, so that its batches only need joining.

    The processor calls `encode` on the event loop (a few us a span, spread over the requests) and
    `export_encoded` on its thread, which then holds the GIL for microseconds rather than for a
    batch's encoding: a thread holding the GIL stalls the loop, and that set the proxies' p99.
    """

    def encode(self, span: FinishedSpan) -> bytes:
        """One span's encoding, as `export_encoded` takes it."""
        ...

    def export_encoded(self, spans: Sequence[bytes]) -> bool:
        """Send one batch of encoded spans; False when it was not delivered."""
        ...


class SpanProcessor(Protocol):
    """Receives each finished span (on the event loop: must not block)."""

    def on_end(self, span: FinishedSpan) -> None:
        """Take one finished span."""
        ...

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (within `timeout_s`) and stop."""
        ...


class Tracer:
    """Starts and ends the proxies' spans: ids and the sampling decision when a request arrives
    (`traceparent` set for the next hop), one `FinishedSpan` to the processor when it completes."""

    def __init__(self, processor: SpanProcessor, sampler: Sampler | None = None) -> None:
        self.processor = processor
        self.sampler: Sampler = sampler or ParentBasedRatio(1.0)

    def start(self, headers: Headers) -> Started | None:
        """Make a new span the parent the next hop sees; None when it is not recorded (not sampled)."""
        start_ns = _wall_clock_ns()
        parent = parse_parent(headers)
        trace_id = parent.trace_id if parent is not None else _nonzero_bits(128)
        sampled = self.sampler.should_sample(parent, trace_id)
        random_bit = parent.flags & RANDOM_TRACE_ID if parent is not None else RANDOM_TRACE_ID
        flags = (SAMPLED if sampled else 0) | random_bit
        span_id = _nonzero_bits(64)
        headers.set("traceparent", traceparent(trace_id, span_id, flags))
        return Started(trace_id, span_id, flags, parent, start_ns) if sampled else None

    def end(self, started: Started, name: str, kind: int, attributes: Mapping[str, AttributeValue],
            error: bool) -> None:
        """Hand the finished span to the processor."""
        self.processor.on_end(FinishedSpan(
            name, kind, started.trace_id, started.span_id, started.parent, started.start_ns, _wall_clock_ns(),
            attributes, error,
        ))

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Deliver the queued spans (within `timeout_s`) and stop exporting."""
        self.processor.shutdown(timeout_s)


def _nonzero_bits(bits: int) -> int:
    """A random non-zero id of `bits` bits (the SDK's RandomIdGenerator)."""
    while not (value := _random_bits(bits)):
        pass
    return value


OutcomeHook = Callable[[str, int], None]
"""Told how many spans were `exported`, `failed` (the exporter gave up on their batch) or `dropped`
(the queue was full); called from the export thread, and from the loop for drops."""


class BatchSpanProcessor:
    """Queues finished spans (bounded: spans over `max_queue` are dropped and counted) and exports
    them from one daemon thread in batches of `max_batch`, or every `schedule_delay_s` when fewer.
    An `EncodingSpanExporter` gets its spans encoded as they end, and its batches as bytes."""

    def __init__(self, exporter: SpanExporter, max_queue: int = 8192, max_batch: int = 32,
                 schedule_delay_s: float | None = None, on_outcome: OutcomeHook | None = None) -> None:
        self.exporter = exporter
        self.on_outcome = on_outcome
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.schedule_delay_s = schedule_delay_s if schedule_delay_s is not None else env_delay_s()
        self.dropped = 0
        self._encode: Callable[[FinishedSpan], bytes] | None = getattr(exporter, "encode", None)
        self._export: Callable[[list[Any]], bool] = getattr(exporter, "export_encoded", exporter.export)
        self._queue: deque[FinishedSpan | bytes] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._export_thread = threading.Thread(target=self._run, name="gatewatch-span-export", daemon=True)
        self._export_thread.start()

    def on_end(self, span: FinishedSpan) -> None:
        """Queue one span; wake the export thread once a batch is ready."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            if not self.dropped:
                log.warning("span queue full (%d): dropping spans until the exporter catches up", self.max_queue)
            self.dropped += 1
            if self.on_outcome is not None:
                self.on_outcome("dropped", 1)
            return
        queue.append(span if self._encode is None else self._encode(span))
        if len(queue) >= self.max_batch and not self._wake.is_set():
            self._wake.set()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what is queued within `timeout_s` (the thread drains before it exits); past it, the
        exporter is shut down first so that retries against an unreachable collector end at once."""
        self._stopping = True
        self._wake.set()
        self._export_thread.join(timeout_s)
        self.exporter.shutdown()
        self._export_thread.join(1.0)

    def _run(self) -> None:
        while not self._stopping:
            batch_ready = self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            # Woken by a full batch: send full batches only (the rest waits to fill up or for the
            # schedule delay), so each export request carries `max_batch` spans.
            self._export_queued(self.max_batch if batch_ready and not self._stopping else 1)
        self._export_queued(1)

    def _export_queued(self, at_least: int) -> None:
        queue = self._queue
        while len(queue) >= at_least:
            batch = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            try:
                delivered = self._export(batch)
            except Exception:  # an exporter bug must not end span export for the process
                log.exception("span export failed; %d spans lost", len(batch))
                delivered = False
            if self.on_outcome is not None:
                self.on_outcome("exported" if delivered else "failed", len(batch))


def env_delay_s(default_s: float = 5.0) -> float:
    """`OTEL_BSP_SCHEDULE_DELAY` (ms) as seconds; `default_s` (the SDK's 5 s) when unset or invalid."""
    try:
        return max(0.001, int(os.environ["OTEL_BSP_SCHEDULE_DELAY"]) / 1000)
    except (KeyError, ValueError):
        return default_s


def resource_attributes(service_name: str) -> dict[str, AttributeValue]:
    """The SDK's `Resource.create({"service.name": service_name})` attributes: SDK identity, then
    `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`, then the configured service name."""
    attributes: dict[str, AttributeValue] = {
        "telemetry.sdk.language": "python", "telemetry.sdk.name": "gatewatch", "telemetry.sdk.version": _version(),
    }
    attributes.update(parse_key_values(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES"))
    if os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = os.environ["OTEL_SERVICE_NAME"]
    if service_name:
        attributes["service.name"] = service_name
    attributes.setdefault("service.name", "unknown_service")
    return attributes


def parse_key_values(value: str, source: str) -> dict[str, str]:
    """`k1=v1,k2=v2` with percent-encoded values (OTel env lists); malformed members are skipped
    with a warning that names `source` and the key, never the value (it may be a credential)."""
    out = {}
    for member in value.split(","):
        if not member.strip():
            continue
        key, sep, raw = member.partition("=")
        key = unquote(key.strip())
        if not sep or not key:
            log.warning("%s: ignoring a member without key=value", source)
            continue
        out[key] = unquote(raw.strip())
    return out


def _version() -> str:
    from gatewatch import __version__

    return __version__
