"""Read functions over the rollups that detectors and dashboards share.

Windows are [start, end) as unix seconds or timezone-aware datetimes, matched on whole minutes of
the rollups (a minute belongs to a window when it starts inside it). Latencies are in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

Instant = float | datetime
_QUANTILES = "quantilesTDigestMerge(0.5, 0.9, 0.99)(Latency)"
_WINDOW = "Minute >= toDateTime(%(start)s) AND Minute < toDateTime(%(end)s)"


@dataclass(frozen=True)
class RouteTraffic:
    """Gateway traffic of one route and method in a window."""

    route: str
    method: str
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float


@dataclass(frozen=True)
class MinuteTraffic:
    """Requests and errors in one minute."""

    minute: datetime
    requests: int
    errors: int


@dataclass(frozen=True)
class ClientActivity:
    """What one client (JWT subject or address) did in a window."""

    kind: str  # "subject" or "address"
    key: str
    requests: int
    errors: int
    client_errors: int  # 4xx, including 401/403/429 from the gateway's policies
    routes: int
    minutes: int


@dataclass(frozen=True)
class Edge:
    """Calls from one service to another in a window."""

    caller: str
    callee: str
    calls: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


def _seconds(instant: Instant) -> int:
    return int(instant.timestamp() if isinstance(instant, datetime) else instant)


def _params(start: Instant, end: Instant, **extra: Any) -> dict[str, Any]:
    return {"start": _seconds(start), "end": _seconds(end), **extra}


def _service_filter(service: str | None) -> str:
    return " AND ServiceName = %(service)s" if service is not None else ""


def _ms(quantiles: list[float], index: int) -> float:
    value = quantiles[index] if quantiles else 0.0
    return round(float(value) / 1e6, 3) if value == value else 0.0  # NaN for empty states


def traffic_by_route(
    client: Client, database: str, start: Instant, end: Instant, service: str | None = None
) -> list[RouteTraffic]:
    """Requests, errors and latency quantiles per route and method, busiest first."""
    rows = client.query(
        f"SELECT Route, Method, sum(Requests), sum(Errors), {_QUANTILES} FROM {database}.traffic_1m "
        f"WHERE {_WINDOW}{_service_filter(service)} GROUP BY Route, Method ORDER BY sum(Requests) DESC",
        parameters=_params(start, end, service=service),
    ).result_rows
    return [
        RouteTraffic(r[0], r[1], int(r[2]), int(r[3]), _ms(r[4], 0), _ms(r[4], 1), _ms(r[4], 2)) for r in rows
    ]


def traffic_per_minute(
    client: Client, database: str, start: Instant, end: Instant,
    service: str | None = None, route: str | None = None,
) -> list[MinuteTraffic]:
    """Requests and errors per minute (optionally of one route), oldest first."""
    route_filter = " AND Route = %(route)s" if route is not None else ""
    rows = client.query(
        f"SELECT Minute, sum(Requests), sum(Errors) FROM {database}.traffic_1m "
        f"WHERE {_WINDOW}{_service_filter(service)}{route_filter} GROUP BY Minute ORDER BY Minute",
        parameters=_params(start, end, service=service, route=route),
    ).result_rows
    return [MinuteTraffic(r[0], int(r[1]), int(r[2])) for r in rows]


def client_activity(
    client: Client, database: str, start: Instant, end: Instant,
    service: str | None = None, limit: int = 1000,
) -> list[ClientActivity]:
    """Per client key: requests, 5xx/error and 4xx counts, distinct routes and active minutes."""
    rows = client.query(
        f"SELECT ClientKind, ClientKey, sum(Requests), sum(Errors), sumIf(Requests, StatusClass = '4xx'), "
        f"uniqExact(Route), uniqExact(Minute) FROM {database}.traffic_1m "
        f"WHERE {_WINDOW}{_service_filter(service)} AND ClientKey != '' "
        "GROUP BY ClientKind, ClientKey ORDER BY sum(Requests) DESC LIMIT %(limit)s",
        parameters=_params(start, end, service=service, limit=limit),
    ).result_rows
    return [ClientActivity(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows]


def edges(client: Client, database: str, start: Instant, end: Instant) -> list[Edge]:
    """Service-to-service edges from client spans, busiest first."""
    rows = client.query(
        f"SELECT Caller, Callee, sum(Calls), sum(Errors), {_QUANTILES} FROM {database}.edges_1m "
        f"WHERE {_WINDOW} GROUP BY Caller, Callee ORDER BY sum(Calls) DESC",
        parameters=_params(start, end),
    ).result_rows
    return [Edge(r[0], r[1], int(r[2]), int(r[3]), _ms(r[4], 0), _ms(r[4], 1), _ms(r[4], 2)) for r in rows]


def edges_from_parents(client: Client, database: str, start: Instant, end: Instant) -> list[Edge]:
    """Edges from raw spans: a span whose parent belongs to another service is a call parent -> child.

    For instrumentation that sets neither peer.service nor server.address; it scans otel_traces in
    the window, so keep windows short.
    """
    rows = client.query(
        f"""
        SELECT parent.ServiceName, child.ServiceName, count(), countIf(child.StatusCode = 'Error'),
               quantilesTDigest(0.5, 0.9, 0.99)(child.Duration)
        FROM {database}.otel_traces AS child
        INNER JOIN (
            SELECT TraceId, SpanId, ServiceName FROM {database}.otel_traces
            WHERE Timestamp >= toDateTime(%(start)s) - 60 AND Timestamp < toDateTime(%(end)s)
        ) AS parent ON child.TraceId = parent.TraceId AND child.ParentSpanId = parent.SpanId
        WHERE child.Timestamp >= toDateTime(%(start)s) AND child.Timestamp < toDateTime(%(end)s)
          AND child.ParentSpanId != '' AND parent.ServiceName != child.ServiceName
        GROUP BY parent.ServiceName, child.ServiceName ORDER BY count() DESC
        """,
        parameters=_params(start, end),
    ).result_rows
    return [Edge(r[0], r[1], int(r[2]), int(r[3]), _ms(r[4], 0), _ms(r[4], 1), _ms(r[4], 2)) for r in rows]
