"""A small deterministic traffic generator for tests, evaluation and benchmarks.

Humans browse with think times and page-load bursts; bots (scraper, credential stuffer, hammer) are
regular, fast and narrow, and a low-and-slow rotator walks the catalogue at a human pace with a new
browser agent on every request; service edges carry calls whose error rate or latency can be faulted.
The same scenario can be written as `otel_traces` rows, as OTLP requests (through the real
pipeline), as a sessions CSV (offline scoring) and as `ground_truth` rows.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gatewatch.semconv import GATEWAY_SERVICE

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

BROWSERS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
PAGES = (("GET", "/", "/"), ("GET", "/api/products", "/api/products"), ("GET", "/api/cart", "/api/cart"),
         ("GET", "/api/search", "/api/search"), ("POST", "/api/cart", "/api/cart"),
         ("GET", "/api/account", "/api/account"))
BOT_KINDS = ("scraper", "stuffer", "hammer", "rotator")
GATEWAY = GATEWAY_SERVICE


@dataclass(frozen=True, slots=True)
class Request:
    """One request seen by the gateway."""

    ts: float
    client: str
    method: str
    route: str
    path: str
    status: int
    user_agent: str
    subject: str
    duration_ms: float


@dataclass(frozen=True, slots=True)
class EdgeCall:
    """One service-to-service call seen by the caller's sidecar."""

    ts: float
    caller: str
    callee: str
    status: int
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Truth:
    """What was injected: a bot client or a faulted edge, and when."""

    kind: str  # bot | fault
    label: str
    scope: str  # client | edge
    key: str
    start: float
    end: float


@dataclass
class Scenario:
    """Generated traffic and what it contains."""

    requests: list[Request] = field(default_factory=list)
    calls: list[EdgeCall] = field(default_factory=list)
    truth: list[Truth] = field(default_factory=list)

    def extend(self, other: Scenario) -> None:
        """Merge another scenario's traffic into this one."""
        self.requests += other.requests
        self.calls += other.calls
        self.truth += other.truth

    def sort(self) -> Scenario:
        """Order traffic by time, as a log would be."""
        self.requests.sort(key=lambda r: r.ts)
        self.calls.sort(key=lambda c: c.ts)
        return self


def human(rng: np.random.Generator, client: str, start: float, end: float) -> list[Request]:
    """A person: logs in, browses pages with think times, each page fetching a few API calls."""
    user = f"user-{client.rsplit('.', 1)[-1]}"
    agent = BROWSERS[int(rng.integers(len(BROWSERS)))]
    out = [Request(start, client, "POST", "/api/login", "/api/login", 200, agent, "", 40.0)]
    t = start + float(rng.exponential(3.0))
    while t < end:
        for i in range(int(rng.integers(1, 4))):  # a page load fires a small burst
            method, route, base = PAGES[int(rng.integers(len(PAGES)))]
            path = f"{base}/{int(rng.integers(1, 200))}" if route == "/api/products" and i else base
            status = 404 if rng.random() < 0.02 else 200
            out.append(Request(t + i * 0.05, client, method, route, path, status, agent, user,
                               float(rng.lognormal(3.0, 0.4))))
        t += float(rng.exponential(6.0)) + 0.5
    return out


def bot(rng: np.random.Generator, kind: str, client: str, start: float, end: float) -> list[Request]:
    """A bot: regular timing, narrow or sweeping paths, automation or spoofed browser agent."""
    out: list[Request] = []
    period = {"scraper": 0.4, "stuffer": 0.5, "hammer": 0.1, "rotator": 2.5}[kind]
    t, i = start, 0
    while t < end:
        if kind == "scraper":
            out.append(Request(t, client, "GET", "/api/products", f"/api/products/{i}",
                               404 if i % 7 == 0 else 200, "python-requests/2.31", "", 15.0))
        elif kind == "stuffer":
            out.append(Request(t, client, "POST", "/api/login", "/api/login", 401 if i % 50 else 200,
                               BROWSERS[0], "", 30.0))
        elif kind == "rotator":
            out.append(Request(t, client, "GET", "/api/products", f"/api/products/{i}", 200,
                               BROWSERS[int(rng.integers(len(BROWSERS)))], "", 15.0))
        else:
            out.append(Request(t, client, "GET", "/api/search", "/api/search", 429 if i % 3 == 0 else 200,
                               "Go-http-client/1.1", "", 10.0))
        t += period * float(rng.uniform(0.9, 1.1))
        i += 1
    return out


def edge_calls(rng: np.random.Generator, caller: str, callee: str, start: float, end: float, rate: float,
               fault: tuple[float, float, str] | None = None, drift_per_min: float = 0.0) -> list[EdgeCall]:
    """Calls at `rate`/s with 0.5% errors; `fault` = (from, to, 'errors'|'latency') degrades a span of time."""
    n = int(rng.poisson(rate * (end - start)))
    times = np.sort(rng.uniform(start, end, n))
    out = []
    for t in times:
        latency = float(rng.lognormal(3.0, 0.3)) * (1 + drift_per_min * (t - start) / 60)
        error_p = 0.005
        if fault and fault[0] <= t < fault[1]:
            if fault[2] == "errors":
                error_p = 0.5
            else:
                latency *= 10
        out.append(EdgeCall(float(t), caller, callee, 503 if rng.random() < error_p else 200, latency))
    return out


def scenario(seed: int, start: float, duration_s: float, humans: int = 20,
             bots: Iterable[str] = BOT_KINDS, bot_after_s: float = 0.0,
             fault_after_s: float | None = None, fault: str = "errors", edge_rate: float = 5.0) -> Scenario:
    """A mixed scenario: humans all along, each bot from `bot_after_s`, a fault on checkout->payment."""
    rng = np.random.default_rng(seed)
    end = start + duration_s
    out = Scenario()
    for h in range(humans):
        out.requests += human(rng, f"10.{seed % 250}.0.{h + 1}", start + float(rng.uniform(0, 5)), end)
    for b, kind in enumerate(bots):
        client = f"203.0.{seed % 250}.{b + 1}"
        onset = start + bot_after_s + float(rng.uniform(0, 5))
        out.requests += bot(rng, kind, client, onset, end)
        out.truth.append(Truth("bot", kind, "client", client, onset, end))
    for caller, callee in (("frontend", "checkout"), ("checkout", "payment"), ("checkout", "inventory")):
        window = None
        if fault_after_s is not None and callee == "payment":
            window = (start + fault_after_s, end, fault)
            out.truth.append(Truth("fault", fault, "edge", f"{caller}->{callee}", window[0], end))
        out.calls += edge_calls(rng, caller, callee, start, end, edge_rate, window)
    return out.sort()


# --- writers ------------------------------------------------------------------------------------

SPAN_COLUMNS = ["Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "SpanKind", "ServiceName",
                "ResourceAttributes", "SpanAttributes", "Duration", "StatusCode"]


def _ids() -> tuple[str, str]:
    raw = uuid.uuid4().hex
    return raw, raw[:16]


def request_attributes(r: Request) -> dict[str, str]:
    """Span attributes the gateway sets on its SERVER span (design.md)."""
    attrs = {"http.request.method": r.method, "http.route": r.route, "url.path": r.path,
             "http.response.status_code": str(r.status), "client.address": r.client,
             "user_agent.original": r.user_agent}
    if r.subject:
        attrs["enduser.id"] = r.subject
    return attrs


def call_attributes(c: EdgeCall) -> dict[str, str]:
    """Span attributes a sidecar sets on its CLIENT span."""
    return {"peer.service": c.callee, "http.request.method": "POST", "http.response.status_code": str(c.status)}


def span_rows(s: Scenario) -> Iterator[list[Any]]:
    """`otel_traces` rows (SPAN_COLUMNS order) for direct inserts in unit tests and benchmarks."""
    for r in s.requests:
        trace, span = _ids()
        yield [datetime.fromtimestamp(r.ts, UTC), trace, span, "", f"{r.method} {r.route}", "Server", GATEWAY,
               {"service.name": GATEWAY}, request_attributes(r), int(r.duration_ms * 1e6),
               "Error" if r.status >= 500 else "Unset"]
    for c in s.calls:
        trace, span = _ids()
        yield [datetime.fromtimestamp(c.ts, UTC), trace, span, "", "POST", "Client", c.caller,
               {"service.name": c.caller}, call_attributes(c), int(c.duration_ms * 1e6),
               "Error" if c.status >= 500 else "Unset"]


def insert_spans(client: Client, db: str, s: Scenario, batch: int = 50_000) -> int:
    """Insert the scenario's spans straight into `otel_traces`; returns the row count."""
    rows: list[list[Any]] = []
    total = 0
    for row in span_rows(s):
        rows.append(row)
        if len(rows) >= batch:
            client.insert(f"{db}.otel_traces", rows, column_names=SPAN_COLUMNS)
            total, rows = total + len(rows), []
    if rows:
        client.insert(f"{db}.otel_traces", rows, column_names=SPAN_COLUMNS)
        total += len(rows)
    return total


def insert_truth(client: Client, db: str, s: Scenario, run_id: str, name: str = "sim") -> None:
    """Record what the scenario injected in `ground_truth`."""
    if not s.truth:
        return
    rows = [[run_id, name, t.kind, t.label, t.scope, t.key, datetime.fromtimestamp(t.start, UTC),
             datetime.fromtimestamp(t.end, UTC), ""] for t in s.truth]
    client.insert(f"{db}.ground_truth", rows, column_names=[
        "RunId", "Scenario", "Kind", "Label", "Scope", "EntityKey", "StartAt", "EndAt", "Details"])


def otlp_requests(s: Scenario, per_request: int = 500) -> Iterator[ExportTraceServiceRequest]:
    """The scenario as OTLP export requests, as proxies would send them to the collector."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

    def kv(attrs: dict[str, str]) -> list[KeyValue]:
        return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()]

    def span(ts: float, ms: float, name: str, kind: Any, attrs: dict[str, str], error: bool) -> Span:
        start = int(ts * 1e9)
        return Span(trace_id=uuid.uuid4().bytes, span_id=uuid.uuid4().bytes[:8], name=name, kind=kind,
                    start_time_unix_nano=start, end_time_unix_nano=start + int(ms * 1e6), attributes=kv(attrs),
                    status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET))

    items: list[tuple[str, Span]] = [
        (GATEWAY, span(r.ts, r.duration_ms, f"{r.method} {r.route}", Span.SPAN_KIND_SERVER,
                         request_attributes(r), r.status >= 500)) for r in s.requests
    ] + [
        (c.caller, span(c.ts, c.duration_ms, "POST", Span.SPAN_KIND_CLIENT, call_attributes(c), c.status >= 500))
        for c in s.calls
    ]
    for i in range(0, len(items), per_request):
        by_service: dict[str, list[Span]] = {}
        for service, sp in items[i : i + per_request]:
            by_service.setdefault(service, []).append(sp)
        request = ExportTraceServiceRequest()
        for service, spans in by_service.items():
            rs = ResourceSpans()
            rs.resource.attributes.extend(kv({"service.name": service}))
            rs.scope_spans.add().spans.extend(spans)
            request.resource_spans.append(rs)
        yield request


SESSION_COLUMNS = ["timestamp", "client", "method", "path", "status", "user_agent"]


def write_sessions_csv(s: Scenario, path: Path) -> None:
    """The scenario's gateway requests as the `detect sessions` CSV input."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*SESSION_COLUMNS, "subject"])
        for r in s.requests:
            stamp = datetime.fromtimestamp(r.ts, UTC).isoformat(timespec="milliseconds")
            writer.writerow([stamp, r.client, r.method, r.path, r.status, r.user_agent, r.subject])
