"""Features computed in ClickHouse over sliding windows of `otel_traces`.

Client features come from gateway SERVER spans (they carry `client.address`); edge features from
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
    # One pass per client; the user agent regex runs on each client's distinct agents only.
    return f"""
SELECT * EXCEPT (gaps) FROM (
SELECT SpanAttributes['client.address'] AS client,
       count() AS n,
       n / %(window)s AS rate_per_s,
       arrayDifference(arraySort(groupArray(toFloat64(toUnixTimestamp64Milli(Timestamp)) / 1000))) AS gaps,
       if(length(gaps) > 1 AND arrayAvg(arraySlice(gaps, 2)) > 0,
          arrayReduce('stddevPop', arraySlice(gaps, 2)) / arrayAvg(arraySlice(gaps, 2)), 0) AS interarrival_cv,
       uniqExact(SpanAttributes['url.path']) AS distinct_paths,
       entropy(SpanAttributes['url.path']) AS path_entropy,
       countIf(intDiv(toUInt16OrZero(SpanAttributes['http.response.status_code']), 100) = 4) / n AS ratio_4xx,
       countIf(SpanAttributes['http.response.status_code'] = '401') / n AS ratio_401,
       countIf(SpanAttributes['http.response.status_code'] = '429') / n AS ratio_429,
       countIf(match(SpanAttributes['url.path'], %(auth_re)s)) / n AS auth_share,
       arrayExists(a -> match(a, %(ua_re)s), groupUniqArray(SpanAttributes['user_agent.original'])) AS ua_automation,
       uniqExactIf(SpanAttributes['enduser.id'], SpanAttributes['enduser.id'] != '') AS distinct_subjects,
       min(Timestamp) AS first_seen,
       max(Timestamp) AS last_seen
FROM {db}.otel_traces
WHERE {_CLIENT_WINDOW}
GROUP BY client)
"""


def _burst_sql(db: str) -> str:
    # Busiest second over the mean of active seconds: counts only, so the second level stays cheap.
    return f"""
SELECT client, max(c) / avg(c) AS burstiness
FROM (SELECT SpanAttributes['client.address'] AS client, toUnixTimestamp(Timestamp) AS sec, count() AS c
      FROM {db}.otel_traces WHERE {_CLIENT_WINDOW} GROUP BY client, sec)
GROUP BY client
"""


# Only the gateway's spans describe clients: sidecars also record client.address (their callers).
_CLIENT_WINDOW = """Timestamp > fromUnixTimestamp64Nano(%(lo)s) AND Timestamp <= fromUnixTimestamp64Nano(%(hi)s)
  AND SpanAttributes['client.address'] != ''
  AND (%(gateways)s = '' OR has(splitByChar(',', %(gateways)s), ServiceName))"""


def client_features(client: Client, db: str, now: datetime, window_s: int,
                    gateways: str = DEFAULT_GATEWAYS) -> pd.DataFrame:
    """One row per client seen in (now - window, now]: `client`, `n`, first/last seen, CLIENT_FEATURES.

    `gateways`: comma-separated ServiceNames whose spans count (empty = every span with client.address).
    """
    hi = ns(now)
    params = {"lo": hi - window_s * 1_000_000_000, "hi": hi, "window": float(window_s),
              "auth_re": AUTH_PATH, "ua_re": AUTOMATION_UA, "gateways": gateways}
    frame = client.query_df(_client_sql(db), parameters=params)
    if frame.empty:
        return pd.DataFrame(columns=["client", "n", "first_seen", "last_seen", *CLIENT_FEATURES])
    bursts = client.query_df(_burst_sql(db), parameters=params)
    frame = frame.merge(bursts, on="client", how="left")
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
    hi = ns(now)
    sql = f"""
SELECT concat(SpanAttributes['http.request.method'], ' ', SpanAttributes['http.route']) AS route,
       if(match(SpanAttributes['user_agent.original'], %(ua_re)s), 'automation', 'browser') AS client_class,
       SpanAttributes['client.address'] AS client,
       toStartOfMinute(Timestamp) AS minute,
       count() AS per_min
FROM {db}.otel_traces
WHERE {_CLIENT_WINDOW} AND SpanAttributes['http.route'] != ''
GROUP BY route, client_class, client, minute
"""
    params = {"lo": hi - window_s * 1_000_000_000, "hi": hi, "ua_re": AUTOMATION_UA, "gateways": gateways}
    return client.query_df(sql, parameters=params)
