"""The demo's closing numbers, read FROM THE STORE (otel_traces, decisions, alerts, ground_truth).

Nothing here uses the simulator's own knowledge except the run id and window: bots and faults
come from `ground_truth`, what gatewatch did from `decisions`, `alerts` and the spans.
Times are compared as epoch milliseconds, so the store's time zone does not matter.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from demo.groundtruth import TruthRow, load_truth

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

STATUS = "SpanAttributes['http.response.status_code']"
CLIENT = "SpanAttributes['client.address']"
# A circuit that opens this long after its fault ended still counts as the reaction to it.
REACTION_GRACE_MS = 30_000
BREAKER = "SpanAttributes['gatewatch.breaker.state']"
SERVER_KINDS = ("Server", "SPAN_KIND_SERVER")


@dataclass(frozen=True)
class Window:
    """The run: its id, and [start, end) in epoch milliseconds."""

    run_id: str
    start_ms: int
    end_ms: int


@dataclass
class DecisionRow:
    """One decision as stored."""

    created_ms: int
    expires_ms: int
    kind: str
    scope: str
    key: str
    detector: str
    score: float
    mode: str


@dataclass
class BotOutcome:
    """One injected bot and what gatewatch did about it."""

    label: str
    addresses: list[str]
    start_ms: int
    requests: int = 0
    flagged_ms: int | None = None
    decision: str = ""
    requests_after: int = 0
    limited_after: int = 0  # answered 429/403 after the decision

    @property
    def limited_share(self) -> float | None:
        return self.limited_after / self.requests_after if self.requests_after else None


@dataclass
class FaultOutcome:
    """One injected fault on an edge and how the circuit reacted."""

    edge: str
    start_ms: int
    end_ms: int
    details: dict[str, Any]
    opened_ms: int | None = None  # circuit_open decision, or first span with breaker state open
    closed_ms: int | None = None  # circuit_close decision, or last open span / decision expiry
    opened_by: str = ""
    open_spans: int = 0


@dataclass
class AlertRow:
    """One alert as stored (latest state)."""

    name: str
    severity: str
    starts_ms: int
    resolved: bool
    summary: str


@dataclass
class Summary:
    """Everything the demo prints at the end."""

    window: Window
    requests: int = 0
    status_classes: dict[str, int] = field(default_factory=dict)
    spans: int = 0
    services: list[str] = field(default_factory=list)
    bots: list[BotOutcome] = field(default_factory=list)
    faults: list[FaultOutcome] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)
    spurious_opens: int = 0  # circuit_open decisions on edges/times where nothing was injected
    human_clients: int = 0
    humans_limited: int = 0
    report_path: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def bots_limited(self) -> int:
        return sum(1 for b in self.bots if b.flagged_ms is not None and b.limited_after > 0)

    @property
    def circuits_opened(self) -> int:
        return sum(1 for f in self.faults if f.opened_ms is not None)


def _ms(value: Any) -> int:
    return int(value)


class SummaryReader:
    """Queries of one database for one run window."""

    def __init__(self, client: Client, database: str, gateway_service: str = "gateway") -> None:
        self.client = client
        self.db = database
        self.gateway = gateway_service

    def _rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        params.setdefault("gateway", self.gateway)
        return [tuple(r) for r in self.client.query(sql, parameters=params).result_rows]

    def _span_filter(self, window: Window) -> str:
        return (
            f"Timestamp >= fromUnixTimestamp64Milli({window.start_ms}) "
            f"AND Timestamp < fromUnixTimestamp64Milli({window.end_ms})"
        )

    def read(self, window: Window) -> Summary:
        """The whole summary of one run."""
        summary = Summary(window)
        truth = load_truth(self.client, self.db, window.run_id)
        self._traffic(summary)
        summary.decisions = self.decisions(window)
        summary.alerts = self.alerts(window)
        summary.bots = [self._bot(window, label, rows, summary.decisions) for label, rows in _bots(truth).items()]
        summary.faults = [self._fault(window, row, summary.decisions) for row in truth if row.kind == "fault"]
        summary.spurious_opens = sum(
            1 for d in summary.decisions
            if d.kind == "circuit_open"
            and not any(_during(d.created_ms, f) and f.edge == d.key for f in summary.faults)
        )
        humans = {r.key for r in truth if r.kind == "human"}
        summary.human_clients = len(humans)
        summary.humans_limited = len({d.key for d in summary.decisions if d.scope == "client" and d.key in humans})
        return summary

    def _traffic(self, summary: Summary) -> None:
        where = self._span_filter(summary.window)
        [(spans,)] = self._rows(f"SELECT count() FROM {self.db}.otel_traces WHERE {where}")
        summary.spans = int(spans)
        summary.services = [str(r[0]) for r in self._rows(
            f"SELECT DISTINCT ServiceName FROM {self.db}.otel_traces WHERE {where} ORDER BY ServiceName"
        )]
        rows = self._rows(
            f"SELECT concat(substring({STATUS}, 1, 1), 'xx') AS class, count() FROM {self.db}.otel_traces "
            f"WHERE {where} AND {self._gateway_requests()} GROUP BY class ORDER BY class"
        )
        summary.status_classes = {str(c): int(n) for c, n in rows}
        summary.requests = sum(summary.status_classes.values())

    def _gateway_requests(self) -> str:
        kinds = ", ".join(f"'{k}'" for k in SERVER_KINDS)
        return f"ServiceName = %(gateway)s AND SpanKind IN ({kinds})"

    def decisions(self, window: Window) -> list[DecisionRow]:
        """Decisions taken during the run (and its drain), oldest first."""
        rows = self._rows(
            "SELECT toUnixTimestamp64Milli(CreatedAt), toUnixTimestamp64Milli(ExpiresAt), Kind, Scope, TargetKey, "
            f"Detector, Score, Mode FROM {self.db}.decisions FINAL "
            f"WHERE CreatedAt >= fromUnixTimestamp64Milli({window.start_ms}) ORDER BY CreatedAt"
        )
        return [DecisionRow(_ms(r[0]), _ms(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), float(r[6]), str(r[7]))
                for r in rows]

    def alerts(self, window: Window) -> list[AlertRow]:
        """Alerts raised during the run, latest state of each."""
        rows = self._rows(
            "SELECT Name, Severity, toUnixTimestamp64Milli(StartsAt), EndsAt IS NOT NULL, "
            f"Annotations['summary'] FROM {self.db}.alerts FINAL "
            f"WHERE StartsAt >= fromUnixTimestamp64Milli({window.start_ms}) ORDER BY StartsAt"
        )
        return [AlertRow(str(r[0]), str(r[1]), _ms(r[2]), bool(r[3]), str(r[4] or "")) for r in rows]

    def _bot(self, window: Window, label: str, rows: list[TruthRow], decisions: list[DecisionRow]) -> BotOutcome:
        addresses = sorted({r.key for r in rows})
        outcome = BotOutcome(label, addresses, min(int(r.start_at.timestamp() * 1000) for r in rows))
        where = self._span_filter(window)
        [(total,)] = self._rows(
            f"SELECT count() FROM {self.db}.otel_traces WHERE {where} AND {self._gateway_requests()} "
            f"AND has(%(addrs)s, {CLIENT})", addrs=addresses,
        )
        outcome.requests = int(total)
        own = [d for d in decisions if d.scope == "client" and d.key in addresses and d.mode == "enforce"]
        if not own:
            own = [d for d in decisions if d.scope == "client" and d.key in addresses]
        if not own:
            return outcome
        outcome.flagged_ms = min(d.created_ms for d in own)
        outcome.decision = ", ".join(sorted({f"{d.kind} ({d.detector})" for d in own}))
        first = {a: min((d.created_ms for d in own if d.key == a), default=None) for a in addresses}
        for addr, since in first.items():
            if since is None:
                continue
            [(after, limited)] = self._rows(
                f"SELECT count(), countIf({STATUS} IN ('429', '403')) FROM {self.db}.otel_traces "
                f"WHERE {where} AND {self._gateway_requests()} AND {CLIENT} = %(addr)s "
                f"AND Timestamp >= fromUnixTimestamp64Milli({since})", addr=addr,
            )
            outcome.requests_after += int(after)
            outcome.limited_after += int(limited)
        return outcome

    def _fault(self, window: Window, row: TruthRow, decisions: list[DecisionRow]) -> FaultOutcome:
        outcome = FaultOutcome(
            row.key, int(row.start_at.timestamp() * 1000), int(row.end_at.timestamp() * 1000), row.details
        )
        opens = [d for d in decisions if d.scope == "edge" and d.key == row.key and d.kind == "circuit_open"
                 and _during(d.created_ms, outcome)]
        closes = [d for d in decisions if d.scope == "edge" and d.key == row.key and d.kind == "circuit_close"]
        caller, _, callee = row.key.partition("->")
        during = Window(window.run_id, outcome.start_ms, outcome.end_ms + REACTION_GRACE_MS)
        if caller and callee:
            [(count, first, last)] = self._rows(
                f"SELECT count(), toUnixTimestamp64Milli(min(Timestamp)), toUnixTimestamp64Milli(max(Timestamp)) "
                f"FROM {self.db}.otel_traces WHERE {self._span_filter(during)} AND {BREAKER} = 'open' "
                f"AND ServiceName = %(caller)s AND SpanAttributes['peer.service'] = %(callee)s",
                caller=caller, callee=callee,
            )
            outcome.open_spans = int(count)
            if count:
                outcome.opened_ms, outcome.closed_ms, outcome.opened_by = int(first), int(last), "sidecar breaker"
        if opens:
            first_open = min(d.created_ms for d in opens)
            if outcome.opened_ms is None or first_open <= outcome.opened_ms:
                outcome.opened_by = f"decision ({opens[0].detector})"
            outcome.opened_ms = min(first_open, outcome.opened_ms or first_open)
            later = [d.created_ms for d in closes if d.created_ms >= first_open]
            outcome.closed_ms = min(later) if later else max(d.expires_ms for d in opens)
        return outcome


def _during(at_ms: int, fault: FaultOutcome) -> bool:
    """True when `at_ms` falls in the fault's window (plus the reaction grace)."""
    return fault.start_ms <= at_ms <= fault.end_ms + REACTION_GRACE_MS


def _bots(truth: list[TruthRow]) -> dict[str, list[TruthRow]]:
    grouped: dict[str, list[TruthRow]] = defaultdict(list)
    for row in truth:
        if row.kind == "bot":
            grouped[row.label].append(row)
    return dict(grouped)



def live_counts(client: Client, database: str, start_ms: int) -> tuple[int, int, int]:
    """Spans, decisions and alerts stored since `start_ms`, for the progress panel."""
    since = f"fromUnixTimestamp64Milli({int(start_ms)})"
    [(spans, decisions, alerts)] = client.query(
        f"SELECT (SELECT count() FROM {database}.otel_traces WHERE Timestamp >= {since}), "
        f"(SELECT count() FROM {database}.decisions WHERE CreatedAt >= {since}), "
        f"(SELECT uniqExact(Fingerprint) FROM {database}.alerts WHERE StartsAt >= {since})"
    ).result_rows
    return int(spans), int(decisions), int(alerts)
