# ruff: noqa: E501 - SQL reads better one clause per line than wrapped at 120 columns
"""What the dashboards show: every panel's SQL and the columns it must return, as plain data.

`dashboards/build.py` turns these specs into Grafana JSON; the renderer reads only that JSON, and
the tests check each panel's query returns `columns` (so a renamed column fails a test, not a panel).
SQL uses the grafana-clickhouse-datasource macros and Grafana variables, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

DATASOURCE_UID = "clickhouse"
DATASOURCE_TYPE = "grafana-clickhouse-datasource"

# Tables are named through the hidden `database` constant so one JSON serves any database name.
TRACES = "${database}.otel_traces"
DECISIONS = "${database}.decisions"
ALERTS = "${database}.alerts"
GROUND_TRUTH = "${database}.ground_truth"

# Edge traffic is what the gateway served: its server spans.
EDGE = "ServiceName = '${gateway_service}' AND SpanKind = 'Server'"
ROUTE = "SpanAttributes['http.route']"
STATUS = "toUInt16OrZero(SpanAttributes['http.response.status_code'])"
CLIENT = "SpanAttributes['client.address']"
ROUTE_FILTER = f"$__conditionalAll({ROUTE} IN (${{route:singlequote}}), $route)"
# East-west calls: a service's client span names its callee in peer.service.
CALLEE = "SpanAttributes['peer.service']"
EDGE_CALL = f"SpanKind = 'Client' AND {CALLEE} != ''"
SERVICE_FILTER = f"$__conditionalAll((ServiceName IN (${{service:singlequote}}) OR {CALLEE} IN (${{service:singlequote}})), $service)"
IS_ERROR = "StatusCode = 'Error'"
# Per-minute rollups (pipelines/migrations/0002): panels reading them get a 1m minimum interval.
TRAFFIC_1M = "${database}.traffic_1m"
EDGES_1M = "${database}.edges_1m"
ROLLUP_EDGE = "ServiceName = '${gateway_service}'"
ROLLUP_ROUTE_FILTER = "$__conditionalAll(Route IN (${route:singlequote}), $route)"
ROLLUP_SERVICE_FILTER = "$__conditionalAll((Caller IN (${service:singlequote}) OR Callee IN (${service:singlequote})), $service)"
MS = "Duration / 1e6"


@dataclass(frozen=True)
class PanelSpec:
    """One panel: its visualization, query, and the columns that query must return."""

    title: str
    kind: str  # timeseries | barchart | table | stat | traces
    sql: str
    columns: tuple[str, ...]
    unit: str = ""
    description: str = ""
    width: int = 12
    height: int = 8
    min_interval: str = ""  # Grafana's panel "Min interval", e.g. 1m for per-minute rollups

    @property
    def query_type(self) -> str:
        """The plugin's queryType for this visualization."""
        return {"timeseries": "timeseries", "traces": "traces"}.get(self.kind, "table")


@dataclass(frozen=True)
class VariableSpec:
    """A dashboard variable: `constant`, `query` (values from SQL) or `textbox`."""

    name: str
    kind: str
    label: str = ""
    value: str = ""
    sql: str = ""


@dataclass(frozen=True)
class AnnotationSpec:
    """A dashboard annotation query: returns `time`, `text` and `tags` rows."""

    name: str
    sql: str
    color: str


@dataclass(frozen=True)
class DashboardSpec:
    """A dashboard: uid, title, panels in reading order, variables and annotations."""

    uid: str
    title: str
    panels: tuple[PanelSpec, ...]
    variables: tuple[VariableSpec, ...] = ()
    annotations: tuple[AnnotationSpec, ...] = ()
    tags: tuple[str, ...] = ("gatewatch",)
    description: str = ""


DATABASE = VariableSpec("database", "constant", value="gatewatch")
GATEWAY = VariableSpec("gateway_service", "constant", value="gateway")
ROUTE_VAR = VariableSpec(
    "route", "query", label="Route",
    sql=f"SELECT DISTINCT {ROUTE} FROM {TRACES} WHERE $__timeFilter(Timestamp) AND {EDGE} AND {ROUTE} != '' ORDER BY 1",
)
SERVICE_VAR = VariableSpec(
    "service", "query", label="Service",
    sql=f"SELECT DISTINCT ServiceName FROM {TRACES} WHERE $__timeFilter(Timestamp) AND ServiceName != '' ORDER BY 1",
)
TRACE_ID = VariableSpec("trace_id", "textbox", label="Trace ID (empty: slowest in range)")

DECISION_MARKS = AnnotationSpec(
    "Decisions",
    f"SELECT CreatedAt AS time, concat(Kind, ' ', TargetKey, ' (', Detector, ')') AS text, [Kind, Detector] AS tags "
    f"FROM {DECISIONS} WHERE $__timeFilter(CreatedAt) ORDER BY time",
    "#F2495C",
)
ALERT_MARKS = AnnotationSpec(
    "Alerts",
    f"SELECT StartsAt AS time, concat(Name, ': ', Annotations['summary']) AS text, [toString(Severity)] AS tags "
    f"FROM {ALERTS} FINAL WHERE $__timeFilter(StartsAt) ORDER BY time",
    "#FF9830",
)
INJECTED_MARKS = AnnotationSpec(
    "Injected (simulator ground truth)",
    f"SELECT StartAt AS time, concat(Kind, ' ', Label, ' ', EntityKey) AS text, [toString(Scenario)] AS tags "
    f"FROM {GROUND_TRUTH} WHERE $__timeFilter(StartAt) ORDER BY time",
    "#8AB8FF",
)

TRAFFIC = DashboardSpec(
    uid="gatewatch-traffic",
    title="gatewatch / Traffic",
    description="North-south traffic at the gateway: rates, latency, clients, auth and rate-limit answers.",
    variables=(DATABASE, GATEWAY, ROUTE_VAR),
    annotations=(DECISION_MARKS,),
    panels=(
        PanelSpec(
            "Requests/s by route and status class", "timeseries",
            f"SELECT $__timeInterval(Minute) AS time, concat(Route, ' ', StatusClass) AS series, "
            f"sum(Requests) / $__interval_s AS rps FROM {TRAFFIC_1M} "
            f"WHERE $__timeFilter(Minute) AND {ROLLUP_EDGE} AND {ROLLUP_ROUTE_FILTER} GROUP BY time, series ORDER BY time",
            ("time", "series", "rps"), unit="reqps", width=16, min_interval="1m",
        ),
        PanelSpec(
            "Auth and rate-limit answers (share of requests)", "stat",
            f"SELECT countIf({STATUS} = 401) / greatest(count(), 1) AS share_401, "
            f"countIf({STATUS} = 403) / greatest(count(), 1) AS share_403, "
            f"countIf({STATUS} = 429) / greatest(count(), 1) AS share_429 "
            f"FROM {TRACES} WHERE $__timeFilter(Timestamp) AND {EDGE} AND {ROUTE_FILTER}",
            ("share_401", "share_403", "share_429"), unit="percentunit", width=8,
        ),
        PanelSpec(
            "Latency p50 / p95 / p99", "timeseries",
            f"SELECT $__timeInterval(Timestamp) AS time, quantile(0.5)({MS}) AS p50, quantile(0.95)({MS}) AS p95, "
            f"quantile(0.99)({MS}) AS p99 FROM {TRACES} "
            f"WHERE $__timeFilter(Timestamp) AND {EDGE} AND {ROUTE_FILTER} GROUP BY time ORDER BY time",
            ("time", "p50", "p95", "p99"), unit="ms",
        ),
        PanelSpec(
            "401 / 403 / 429 per second", "timeseries",
            f"SELECT $__timeInterval(Timestamp) AS time, countIf({STATUS} = 401) / $__interval_s AS unauthorized, "
            f"countIf({STATUS} = 403) / $__interval_s AS forbidden, countIf({STATUS} = 429) / $__interval_s AS limited "
            f"FROM {TRACES} WHERE $__timeFilter(Timestamp) AND {EDGE} AND {ROUTE_FILTER} GROUP BY time ORDER BY time",
            ("time", "unauthorized", "forbidden", "limited"), unit="reqps",
        ),
        PanelSpec(
            "Top clients", "barchart",
            f"SELECT ClientKey AS client, sum(Requests) AS requests, sumIf(Requests, StatusClass IN ('4xx', '5xx')) AS rejected "
            f"FROM {TRAFFIC_1M} WHERE $__timeFilter(Minute) AND {ROLLUP_EDGE} AND {ROLLUP_ROUTE_FILTER} AND ClientKey != '' "
            f"GROUP BY client ORDER BY requests DESC LIMIT 10",
            ("client", "requests", "rejected"), min_interval="1m",
        ),
        PanelSpec(
            "Routes", "table",
            f"SELECT Route AS route, sum(Requests) AS requests, round(sum(Errors) / sum(Requests), 4) AS error_share, "
            f"round(quantilesTDigestMerge(0.5, 0.9, 0.99)(Latency)[2] / 1e6, 1) AS p90_ms, "
            f"round(quantilesTDigestMerge(0.5, 0.9, 0.99)(Latency)[3] / 1e6, 1) AS p99_ms, uniqExact(ClientKey) AS clients "
            f"FROM {TRAFFIC_1M} WHERE $__timeFilter(Minute) AND {ROLLUP_EDGE} AND {ROLLUP_ROUTE_FILTER} "
            f"GROUP BY route ORDER BY requests DESC LIMIT 50",
            ("route", "requests", "error_share", "p90_ms", "p99_ms", "clients"), min_interval="1m",
        ),
    ),
)

EDGES = DashboardSpec(
    uid="gatewatch-edges",
    title="gatewatch / Service edges",
    description="East-west calls between services (caller -> callee) as the sidecars saw them, and breaker states.",
    variables=(DATABASE, SERVICE_VAR),
    annotations=(DECISION_MARKS,),
    panels=(
        PanelSpec(
            "Edges", "table",
            f"SELECT Caller AS caller, Callee AS callee, sum(Calls) AS calls, sum(Errors) AS errors, "
            f"round(sum(Errors) / sum(Calls), 4) AS error_rate, "
            f"round(quantilesTDigestMerge(0.5, 0.9, 0.99)(Latency)[1] / 1e6, 1) AS p50_ms, "
            f"round(quantilesTDigestMerge(0.5, 0.9, 0.99)(Latency)[3] / 1e6, 1) AS p99_ms FROM {EDGES_1M} "
            f"WHERE $__timeFilter(Minute) AND {ROLLUP_SERVICE_FILTER} GROUP BY caller, callee ORDER BY calls DESC LIMIT 100",
            ("caller", "callee", "calls", "errors", "error_rate", "p50_ms", "p99_ms"), width=24, min_interval="1m",
        ),
        PanelSpec(
            "Calls/s per edge", "timeseries",
            f"SELECT $__timeInterval(Minute) AS time, concat(Caller, ' -> ', Callee) AS edge, "
            f"sum(Calls) / $__interval_s AS calls FROM {EDGES_1M} "
            f"WHERE $__timeFilter(Minute) AND {ROLLUP_SERVICE_FILTER} GROUP BY time, edge ORDER BY time",
            ("time", "edge", "calls"), unit="reqps", min_interval="1m",
        ),
        PanelSpec(
            "Error rate per edge", "timeseries",
            f"SELECT $__timeInterval(Minute) AS time, concat(Caller, ' -> ', Callee) AS edge, "
            f"sum(Errors) / sum(Calls) AS error_rate FROM {EDGES_1M} "
            f"WHERE $__timeFilter(Minute) AND {ROLLUP_SERVICE_FILTER} GROUP BY time, edge ORDER BY time",
            ("time", "edge", "error_rate"), unit="percentunit", min_interval="1m",
        ),
        PanelSpec(
            "p95 latency per edge", "timeseries",
            f"SELECT $__timeInterval(Timestamp) AS time, concat(ServiceName, ' -> ', {CALLEE}) AS edge, "
            f"quantile(0.95)({MS}) AS p95 FROM {TRACES} "
            f"WHERE $__timeFilter(Timestamp) AND {EDGE_CALL} AND {SERVICE_FILTER} GROUP BY time, edge ORDER BY time",
            ("time", "edge", "p95"), unit="ms",
        ),
        PanelSpec(
            "Calls by breaker state", "timeseries",
            f"SELECT $__timeInterval(Timestamp) AS time, "
            f"concat(ServiceName, ' -> ', {CALLEE}, ' ', SpanAttributes['gatewatch.breaker.state']) AS edge_state, "
            f"count() / $__interval_s AS calls FROM {TRACES} "
            f"WHERE $__timeFilter(Timestamp) AND {EDGE_CALL} AND {SERVICE_FILTER} "
            f"AND SpanAttributes['gatewatch.breaker.state'] != '' GROUP BY time, edge_state ORDER BY time",
            ("time", "edge_state", "calls"), unit="reqps",
        ),
        PanelSpec(
            "Circuit decisions", "table",
            f"SELECT CreatedAt AS time, TargetKey AS edge, Kind AS action, Detector AS detector, round(Score, 3) AS score, "
            f"Mode AS mode, ExpiresAt AS expires FROM {DECISIONS} "
            f"WHERE $__timeFilter(CreatedAt) AND Kind IN ('circuit_open', 'circuit_close') ORDER BY time DESC LIMIT 100",
            ("time", "edge", "action", "detector", "score", "mode", "expires"), width=24,
        ),
    ),
)

BOTS = DashboardSpec(
    uid="gatewatch-bots",
    title="gatewatch / Bots and rate limits",
    description="Bot scores per client, who is being limited, and the route limits the tuner set over time.",
    variables=(DATABASE, GATEWAY, ROUTE_VAR),
    annotations=(DECISION_MARKS,),
    panels=(
        PanelSpec(
            "Bot scores", "table",
            f"SELECT TargetKey AS client, round(max(Score), 3) AS score, argMax(Kind, CreatedAt) AS last_action, "
            f"argMax(Mode, CreatedAt) AS mode, count() AS decisions, max(CreatedAt) AS last_at, "
            f"argMax(arrayStringConcat(arrayMap((k, v) -> concat(k, '=', toString(round(v, 2))), "
            f"mapKeys(TopFeatures), mapValues(TopFeatures)), ', '), CreatedAt) AS top_features "
            f"FROM {DECISIONS} WHERE $__timeFilter(CreatedAt) AND Scope = 'client' "
            f"GROUP BY client ORDER BY score DESC LIMIT 50",
            ("client", "score", "last_action", "mode", "decisions", "last_at", "top_features"), width=24,
        ),
        PanelSpec(
            "Bot score over time", "timeseries",
            f"SELECT $__timeInterval(CreatedAt) AS time, TargetKey AS client, max(Score) AS score FROM {DECISIONS} "
            f"WHERE $__timeFilter(CreatedAt) AND Scope = 'client' GROUP BY time, client ORDER BY time",
            ("time", "client", "score"),
        ),
        PanelSpec(
            "Limited requests/s by client", "timeseries",
            f"SELECT $__timeInterval(Timestamp) AS time, {CLIENT} AS client, count() / $__interval_s AS limited "
            f"FROM {TRACES} WHERE $__timeFilter(Timestamp) AND {EDGE} AND {ROUTE_FILTER} "
            f"AND ({STATUS} = 429 OR SpanAttributes['gatewatch.ratelimit.outcome'] IN ('limited', 'blocked')) "
            f"GROUP BY time, client ORDER BY time",
            ("time", "client", "limited"), unit="reqps",
        ),
        PanelSpec(
            "Effective limit per route", "timeseries",
            f"SELECT $__timeInterval(CreatedAt) AS time, TargetKey AS route, "
            f"max(JSONExtractFloat(Params, 'rate_per_s')) AS limit_rps FROM {DECISIONS} "
            f"WHERE $__timeFilter(CreatedAt) AND Kind = 'route_limit' "
            f"AND $__conditionalAll(TargetKey IN (${{route:singlequote}}), $route) GROUP BY time, route ORDER BY time",
            ("time", "route", "limit_rps"), unit="reqps",
        ),
        PanelSpec(
            "Rate-limit outcomes", "barchart",
            f"SELECT SpanAttributes['gatewatch.ratelimit.outcome'] AS outcome, count() AS requests FROM {TRACES} "
            f"WHERE $__timeFilter(Timestamp) AND {EDGE} AND {ROUTE_FILTER} "
            f"AND SpanAttributes['gatewatch.ratelimit.outcome'] != '' GROUP BY outcome ORDER BY requests DESC",
            ("outcome", "requests"),
        ),
        PanelSpec(
            "Clients under a limit now", "stat",
            f"SELECT uniqExactIf(TargetKey, Kind IN ('rate_limit', 'block')) AS limited_clients, "
            f"uniqExactIf(TargetKey, Kind = 'block') AS blocked_clients FROM {DECISIONS} "
            f"WHERE Scope = 'client' AND CreatedAt <= $__toTime AND ExpiresAt > $__toTime",
            ("limited_clients", "blocked_clients"),
        ),
    ),
)

ANOMALIES = DashboardSpec(
    uid="gatewatch-anomalies",
    title="gatewatch / Anomalies and decisions",
    description="What the detectors decided and alerted on, marked on the traffic they reacted to.",
    variables=(DATABASE, GATEWAY),
    annotations=(DECISION_MARKS, ALERT_MARKS, INJECTED_MARKS),
    panels=(
        PanelSpec(
            "Edge errors/s with decisions and alerts", "timeseries",
            f"SELECT $__timeInterval(Timestamp) AS time, countIf({EDGE} AND {STATUS} >= 500) / $__interval_s AS edge_5xx, "
            f"countIf({EDGE_CALL} AND {IS_ERROR}) / $__interval_s AS service_errors FROM {TRACES} "
            f"WHERE $__timeFilter(Timestamp) GROUP BY time ORDER BY time",
            ("time", "edge_5xx", "service_errors"), unit="reqps", width=16,
        ),
        PanelSpec(
            "Decisions and alerts", "stat",
            f"SELECT (SELECT count() FROM {DECISIONS} WHERE $__timeFilter(CreatedAt)) AS decisions, "
            f"(SELECT count() FROM {ALERTS} FINAL WHERE $__timeFilter(StartsAt)) AS alerts, "
            f"(SELECT count() FROM {ALERTS} FINAL WHERE StartsAt <= $__toTime AND (EndsAt IS NULL OR EndsAt > $__toTime)) AS firing",
            ("decisions", "alerts", "firing"), width=8,
        ),
        PanelSpec(
            "Decisions per minute by kind", "timeseries",
            f"SELECT toStartOfMinute(CreatedAt) AS time, Kind AS kind, count() AS decisions FROM {DECISIONS} "
            f"WHERE $__timeFilter(CreatedAt) GROUP BY time, kind ORDER BY time",
            ("time", "kind", "decisions"),
        ),
        PanelSpec(
            "Alerts", "table",
            f"SELECT StartsAt AS started, Name AS name, Severity AS severity, Annotations['summary'] AS summary, "
            f"if(EndsAt IS NULL, 'firing', 'resolved') AS state, DecisionId AS decision FROM {ALERTS} FINAL "
            f"WHERE $__timeFilter(StartsAt) ORDER BY started DESC LIMIT 100",
            ("started", "name", "severity", "summary", "state", "decision"),
        ),
        PanelSpec(
            "Decisions", "table",
            f"SELECT CreatedAt AS time, Kind AS kind, Scope AS scope, TargetKey AS target, Detector AS detector, "
            f"round(Score, 3) AS score, Mode AS mode, ExpiresAt AS expires FROM {DECISIONS} "
            f"WHERE $__timeFilter(CreatedAt) ORDER BY time DESC LIMIT 200",
            ("time", "kind", "scope", "target", "detector", "score", "mode", "expires"), width=24,
        ),
    ),
)

SLOWEST = f"SELECT TraceId FROM {TRACES} WHERE $__timeFilter(Timestamp) AND ParentSpanId = '' ORDER BY Duration DESC LIMIT 1"
TRACES_DASH = DashboardSpec(
    uid="gatewatch-traces",
    title="gatewatch / Traces",
    description="Find slow or failing traces and open one in the trace view.",
    variables=(DATABASE, SERVICE_VAR, TRACE_ID),
    panels=(
        PanelSpec(
            "Slowest traces", "table",
            f"SELECT TraceId AS trace_id, ServiceName AS service, SpanName AS operation, round({MS}, 1) AS duration_ms, "
            f"StatusCode AS status, Timestamp AS started FROM {TRACES} "
            f"WHERE $__timeFilter(Timestamp) AND ParentSpanId = '' "
            f"AND $__conditionalAll(ServiceName IN (${{service:singlequote}}), $service) ORDER BY Duration DESC LIMIT 20",
            ("trace_id", "service", "operation", "duration_ms", "status", "started"), width=24,
        ),
        PanelSpec(
            "Trace", "traces",
            "SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID, ServiceName AS serviceName, "
            "SpanName AS operationName, multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime, "
            "multiply(Duration, 0.000001) AS duration, "
            "arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags, "
            "arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags, "
            f"StatusCode AS statusCode FROM {TRACES} "
            f"WHERE TraceId = if(${{trace_id:singlequote}} != '', ${{trace_id:singlequote}}, ({SLOWEST})) "
            "ORDER BY startTime LIMIT 1000",
            ("traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration",
             "tags", "serviceTags", "statusCode"),
            width=24, height=12,
        ),
        PanelSpec(
            "Spans/s by service", "timeseries",
            f"SELECT $__timeInterval(Timestamp) AS time, ServiceName AS service, count() / $__interval_s AS spans "
            f"FROM {TRACES} WHERE $__timeFilter(Timestamp) "
            f"AND $__conditionalAll(ServiceName IN (${{service:singlequote}}), $service) GROUP BY time, service ORDER BY time",
            ("time", "service", "spans"), unit="short",
        ),
        PanelSpec(
            "Error spans", "table",
            f"SELECT Timestamp AS time, ServiceName AS service, SpanName AS operation, StatusMessage AS message, "
            f"TraceId AS trace_id FROM {TRACES} WHERE $__timeFilter(Timestamp) AND {IS_ERROR} "
            f"AND $__conditionalAll(ServiceName IN (${{service:singlequote}}), $service) ORDER BY time DESC LIMIT 50",
            ("time", "service", "operation", "message", "trace_id"),
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (TRAFFIC, EDGES, BOTS, ANOMALIES, TRACES_DASH)


def find_panel(uid: str, title: str) -> PanelSpec:
    """The spec of a panel by dashboard uid and panel title (KeyError if unknown)."""
    for dashboard in DASHBOARDS:
        if dashboard.uid == uid:
            for panel in dashboard.panels:
                if panel.title == title:
                    return panel
    raise KeyError(f"{uid}/{title}")

