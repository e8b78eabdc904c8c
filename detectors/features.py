"""Features computed in ClickHouse over sliding windows of `otel_traces`.

Client features come from gateway spans (they carry `client.address`), read from the narrow
`client_requests` table the 0003 migration fills from `otel_traces`; edge features from
sidecar CLIENT spans (they carry `peer.service`). Both queries aggregate inside ClickHouse, so a
cycle moves one row per client or per edge bucket to Python, never the spans themselves.
The offline scorer (`detectors.sessions`) computes the same client features from a log file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from gatewatch.semconv import GATEWAY_SERVICE

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

# Per-client features, in model order. See docs of `client_features` for definitions.
CLIENT_FEATURES: tuple[str, ...] = (
    "rate_per_s",         # requests per second over the window
    "burstiness",         # busiest second / mean of active seconds (1 = perfectly even)
    "interarrival_cv",    # std/mean of gaps between requests: scripts are regular (low)
    "distinct_paths",     # distinct url.path values
    "path_entropy",       # Shannon entropy (bits) of the path distribution
    "ratio_4xx",
    "ratio_401",
    "ratio_429",
    "auth_share",         # share of requests to login/auth/token endpoints
    "ua_automation",      # 1 if the user agent is a library, crawler, headless browser or empty
    "distinct_subjects",  # JWT subjects (enduser.id) seen from this address
    "distinct_agents",    # user agents seen from this address: a browser keeps one, rotating scrapers do not
)

# RE2 and Python `re` read these the same way; one definition for SQL and for offline scoring.
AUTOMATION_UA = (
    r"(?i)(?:bot|crawl|spider|slurp|curl|wget|python|go-http|java/|okhttp|httpclient|scrapy|"
    r"headless|phantom|libwww|axios|node-fetch|aiohttp|httpx|^$)"
)
AUTH_PATH = r"(?i)(?:login|logout|signin|signup|auth|token|password|session|otp)"

ERROR_STATUS = "StatusCode IN ('Error', 'STATUS_CODE_ERROR')"
DEFAULT_GATEWAYS = GATEWAY_SERVICE


def ns(moment: datetime) -> int:
    """Epoch nanoseconds of an aware datetime (the SQL windows bind integers, not strings)."""
    return int(moment.timestamp() * 1e9)


def _client_sql(db: str) -> str:
    # One pass per client over the narrow client_requests table (never the SpanAttributes map); the
    # user agent regex runs on each client's distinct agents only. Burstiness = longest run of one
    # second in the sorted timestamps over the mean requests per active second.
    return f"""
SELECT * EXCEPT (ts, gaps, secs, starts) FROM (
SELECT Client AS client,
       count() AS n,
       n / %(window)s AS rate_per_s,
       arraySort(groupArray(toUnixTimestamp64Milli(Timestamp))) AS ts,
       arraySlice(arrayDifference(ts), 2) AS gaps,
       if(length(gaps) > 1 AND arrayAvg(gaps) > 0,
          arrayReduce('stddevPop', gaps) / arrayAvg(gaps), 0) AS interarrival_cv,
       arrayMap(x -> intDiv(x, 1000), ts) AS secs,
       arrayFilter((i, s) -> i = 1 OR s != secs[i - 1], arrayEnumerate(secs), secs) AS starts,
       arrayMax(arrayMap((a, b) -> b - a, starts, arrayPushBack(arrayPopFront(starts), n + 1)))
         * length(starts) / n AS burstiness,
       uniqExact(Path) AS distinct_paths,
       entropy(Path) AS path_entropy,
       countIf(intDiv(Status, 100) = 4) / n AS ratio_4xx,
       countIf(Status = 401) / n AS ratio_401,
       countIf(Status = 429) / n AS ratio_429,
       countIf(match(Path, %(auth_re)s)) / n AS auth_share,
       arrayExists(a -> match(a, %(ua_re)s), groupUniqArray(UserAgent)) AS ua_automation,
       uniqExactIf(Subject, Subject != '') AS distinct_subjects,
       uniqExact(UserAgent) AS distinct_agents,
       min(Timestamp) AS first_seen,
       max(Timestamp) AS last_seen
FROM {db}.client_requests
WHERE {_CLIENT_WINDOW}
GROUP BY client)
"""


# Only the gateway's spans describe clients: sidecars also record client.address (their callers).
# ServiceName leads client_requests' key, so naming the gateways prunes the sidecars' rows unread.
_CLIENT_WINDOW = """Timestamp > fromUnixTimestamp64Nano(%(lo)s) AND Timestamp <= fromUnixTimestamp64Nano(%(hi)s)
  AND (empty(%(gateways)s) OR ServiceName IN %(gateways)s)"""


def _window_params(now: datetime, window_s: int, gateways: str) -> dict[str, object]:
    hi = ns(now)
    names = [name.strip() for name in gateways.split(",") if name.strip()]
    return {"lo": hi - window_s * 1_000_000_000, "hi": hi, "window": float(window_s), "auth_re": AUTH_PATH,
            "ua_re": AUTOMATION_UA, "gateways": names}


def client_features(client: Client, db: str, now: datetime, window_s: int,
                    gateways: str = DEFAULT_GATEWAYS) -> pd.DataFrame:
    """One row per client seen in (now - window, now]: `client`, `n`, first/last seen, CLIENT_FEATURES.

    `gateways`: comma-separated ServiceNames whose spans count (empty = every span with client.address).
    """
    # query + one DataFrame: query_df builds a frame per result block and concatenates them, which
    # cost more than the query itself for a few thousand clients.
    result = client.query(_client_sql(db), parameters=_window_params(now, window_s, gateways))
    frame = pd.DataFrame(dict(zip(result.column_names, result.result_columns, strict=True)))
    if frame.empty:
        return pd.DataFrame(columns=["client", "n", "first_seen", "last_seen", *CLIENT_FEATURES])
    for name in CLIENT_FEATURES:
        frame[name] = frame[name].astype(float)
    return frame


@dataclass(frozen=True)
class EdgeWindow:
    """Bucketed history of one service edge: `caller->callee`."""

    caller: str
    callee: str
    buckets: pd.DataFrame  # bucket (datetime), calls, errors, p50_ms, p99_ms; oldest first

    @property
    def key(self) -> str:
        return f"{self.caller}->{self.callee}"


def edge_buckets(client: Client, db: str, now: datetime, span_s: int, bucket_s: int) -> list[EdgeWindow]:
    """Per edge, calls/errors/p50/p99 per `bucket_s` bucket over (now - span, now]."""
    hi = ns(now)
    sql = f"""
SELECT ServiceName AS caller, SpanAttributes['peer.service'] AS callee,
       toStartOfInterval(Timestamp, toIntervalSecond(%(bucket)s)) AS bucket,
       count() AS calls,
       countIf({ERROR_STATUS}
               OR toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500) AS errors,
       quantile(0.5)(Duration) / 1e6 AS p50_ms,
       quantile(0.99)(Duration) / 1e6 AS p99_ms
FROM {db}.otel_traces
WHERE Timestamp > fromUnixTimestamp64Nano(%(lo)s) AND Timestamp <= fromUnixTimestamp64Nano(%(hi)s)
  AND SpanAttributes['peer.service'] != ''
  -- calls our own open breaker refused never reached the callee: they say nothing about its health
  AND SpanAttributes['gatewatch.breaker.state'] != 'open'
GROUP BY caller, callee, bucket
ORDER BY caller, callee, bucket
"""
    params = {"lo": hi - span_s * 1_000_000_000, "hi": hi, "bucket": bucket_s}
    frame = client.query_df(sql, parameters=params)
    if frame.empty:
        return []
    return [
        EdgeWindow(str(caller), str(callee), group.drop(columns=["caller", "callee"]).reset_index(drop=True))
        for (caller, callee), group in frame.groupby(["caller", "callee"], sort=True)
    ]


def route_client_rates(client: Client, db: str, now: datetime, window_s: int,
                       gateways: str = DEFAULT_GATEWAYS) -> pd.DataFrame:
    """Per route, client class and client: requests in each minute of (now - window, now].

    Columns: route, client_class ('automation' or 'browser'), per_min (one row per client-minute).
    """
    sql = f"""
SELECT concat(Method, ' ', Route) AS route,
       if(match(UserAgent, %(ua_re)s), 'automation', 'browser') AS client_class,
       Client AS client,
       toStartOfMinute(Timestamp) AS minute,
       count() AS per_min
FROM {db}.client_requests
WHERE {_CLIENT_WINDOW} AND Route != ''
GROUP BY route, client_class, client, minute
"""
    return client.query_df(sql, parameters=_window_params(now, window_s, gateways))
