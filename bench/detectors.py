"""Detector benchmarks: one detection cycle over a window holding 1M spans, and onset -> enforced delay.

* cycle: DetectionCycle.run over 1M spans in the 120 s client window (900k gateway spans from 2,000
  clients, 100k sidecar spans on 3 edges); baselines in the same run: the same cycle over 100k spans,
  and the naive way (pull the 100k raw rows into pandas and compute the features there); the
  client-features query alone over 1M spans, from client_requests and (baseline) from the span map.
* end to end: humans' history through the real pipeline, then a live bot and a live fault sent as OTLP
  to the span log; delay from the first bot/fault span to the decision seen by a proxy-style long-poll
  watcher of the control plane. Baseline: a decision written straight to the decisions topic -> watcher
  (the transport floor). Targets: cycle <= 1 s, onset -> enforced <= 10 s.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors import simulate
from detectors.botmodel import BotModel
from detectors.config import DetectorConfig
from detectors.controlplane import ControlPlaneService
from detectors.cycle import DetectionCycle
from detectors.features import AUTH_PATH, AUTOMATION_UA, client_features
from detectors.service import DetectorService
from detectors.sessions import window_features
from gatewatch.decisions import Decision, DecisionKind, Reason, Scope, Target
from gatewatch.service import Service
from gatewatch.settings import Settings
from gatewatch.spanlog import Message, open_span_log
from gatewatch.store import connect
from pipelines.migrate import migrate
from pipelines.service import PipelineService

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_window(client, db: str, spans: int, now: float) -> None:
    """`spans` spans inside the last 120 s, generated in ClickHouse (90% gateway, 10% sidecar)."""
    gateway, edges = int(spans * 0.9), spans - int(spans * 0.9)
    client.command(f"""
INSERT INTO {db}.otel_traces (Timestamp, TraceId, SpanId, SpanName, SpanKind, ServiceName, SpanAttributes,
                              Duration, StatusCode)
SELECT fromUnixTimestamp64Nano(toInt64(({now} - 119 + (number % 119000) / 1000) * 1e9)), hex(number), hex(number),
       'GET /api/products', 'Server', 'gateway',
       map('client.address', concat('10.1.', toString(number % 2000 DIV 250), '.', toString(number % 250)),
           'url.path', concat('/api/products/', toString(number % 97)), 'http.route', '/api/products',
           'http.request.method', 'GET', 'http.response.status_code', if(number % 50 = 0, '404', '200'),
           'user_agent.original', 'Mozilla/5.0', 'enduser.id', concat('u', toString(number % 2000))),
       20000000 + number % 5000000, 'Unset'
FROM numbers({gateway})""")
    client.command(f"""
INSERT INTO {db}.otel_traces (Timestamp, TraceId, SpanId, SpanName, SpanKind, ServiceName, SpanAttributes,
                              Duration, StatusCode)
SELECT fromUnixTimestamp64Nano(toInt64(({now} - 1799 + (number % 1799000) / 1000) * 1e9)), hex(number), hex(number),
       'POST', 'Client', ['frontend', 'checkout', 'checkout'][number % 3 + 1],
       map('peer.service', ['checkout', 'payment', 'inventory'][number % 3 + 1],
           'http.response.status_code', if(number % 200 = 0, '503', '200')),
       15000000 + number % 10000000, if(number % 200 = 0, 'Error', 'Unset')
FROM numbers({edges})""")


def time_cycles(client, db: str, now: float, runs: int = 5) -> float:
    config = DetectorConfig()
    frame = client_features(client, db, datetime.fromtimestamp(now, UTC), config.client_window_s)
    model = BotModel.fit(frame[frame["n"] >= config.min_client_requests])
    cycle = DetectionCycle(client, db, config, lambda _: None, model=model)
    cycle.run(datetime.fromtimestamp(now, UTC))  # first tuner pass (it then runs once a minute)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        cycle.run(datetime.fromtimestamp(now, UTC))
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


# Baseline: the client-features query before migration 0003, reading SpanAttributes (the whole map)
# for every span of the window instead of the narrow client_requests table.
MAP_FEATURES_SQL = """
SELECT SpanAttributes['client.address'] AS client, count() AS n,
       arrayDifference(arraySort(groupArray(toFloat64(toUnixTimestamp64Milli(Timestamp)) / 1000))) AS gaps,
       uniqExact(SpanAttributes['url.path']) AS distinct_paths, entropy(SpanAttributes['url.path']) AS path_entropy,
       countIf(intDiv(toUInt16OrZero(SpanAttributes['http.response.status_code']), 100) = 4) / n AS ratio_4xx,
       countIf(match(SpanAttributes['url.path'], %(auth_re)s)) / n AS auth_share,
       arrayExists(a -> match(a, %(ua_re)s), groupUniqArray(SpanAttributes['user_agent.original'])) AS ua,
       uniqExactIf(SpanAttributes['enduser.id'], SpanAttributes['enduser.id'] != '') AS distinct_subjects
FROM {db}.otel_traces
WHERE Timestamp > fromUnixTimestamp64Nano(%(lo)s) AND SpanAttributes['client.address'] != ''
GROUP BY client"""


def time_features(client, db: str, now: float, runs: int = 3) -> dict:
    """Median seconds of the client-features query: narrow table (now) vs the span map (before 0003)."""
    moment = datetime.fromtimestamp(now, UTC)
    params = {"lo": int((now - 120) * 1e9), "auth_re": AUTH_PATH, "ua_re": AUTOMATION_UA}
    narrow, wide = [], []
    for _ in range(runs):
        started = time.perf_counter()
        client_features(client, db, moment, 120)
        narrow.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.query_df(MAP_FEATURES_SQL.format(db=db), parameters=params)
        wide.append(time.perf_counter() - started)
    return {"features_narrow_s": statistics.median(narrow), "features_span_map_s": statistics.median(wide)}


def naive_pandas(client, db: str, now: float) -> float:
    started = time.perf_counter()
    rows = client.query_df(f"""
SELECT toFloat64(toUnixTimestamp64Milli(Timestamp)) / 1000 AS ts, SpanAttributes['client.address'] AS client,
       SpanAttributes['http.request.method'] AS method, SpanAttributes['url.path'] AS path,
       toUInt16OrZero(SpanAttributes['http.response.status_code']) AS status,
       SpanAttributes['user_agent.original'] AS user_agent, SpanAttributes['enduser.id'] AS subject
FROM {db}.otel_traces WHERE SpanAttributes['client.address'] != ''""")
    window_features(rows, 120)
    return time.perf_counter() - started


def bench_cycle(client, base: Settings) -> dict:
    now = time.time()
    out = {}
    for spans in (100_000, 1_000_000):
        db = f"bench_det_{uuid.uuid4().hex[:6]}"
        migrate(client, base.model_copy(update={"database": db}))
        synthetic_window(client, db, spans, now)
        out[f"cycle_{spans}_s"] = time_cycles(client, db, now)
        if spans == 1_000_000:
            out.update(time_features(client, db, now))
        if spans == 100_000:
            out["naive_pandas_100000_s"] = naive_pandas(client, db, now)
        client.command(f"DROP DATABASE {db}")
    return out


class Watcher(threading.Thread):
    """A proxy-style long-poll client recording when each target's decision first arrives."""

    seen: dict[tuple[str, str], float]  # (decision kind, target key) -> when first seen

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.seen, self.stop = url, {"Authorization": f"Bearer {token}"}, {}, False

    def run(self) -> None:
        version = 0
        with httpx.Client(timeout=15) as http:
            while not self.stop:
                try:
                    snap = http.get(f"{self.url}/v1/decisions/watch?since={version}&timeout=2",
                                    headers=self.headers).json()
                except httpx.HTTPError:  # a slow answer on a loaded machine: poll again, as proxies do
                    time.sleep(0.1)
                    continue
                version = snap["version"]
                for d in snap["decisions"]:
                    self.seen.setdefault((d["kind"], d["target"]["key"]), time.time())


def send(producer, scenario) -> None:
    producer.send([Message(r.SerializeToString()) for r in simulate.otlp_requests(scenario)])


def wait_for(watcher: Watcher, key: tuple[str, str], limit_s: float = 60) -> float | None:
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if key in watcher.seen:
            return watcher.seen[key]
        time.sleep(0.05)
    return None


def bench_end_to_end(client, base: Settings) -> dict:
    settings = base.model_copy(update={"database": f"bench_e2e_{uuid.uuid4().hex[:6]}", "control_plane_port": 0,
                                       "control_token": SecretStr("bench"),
                                       "spans_topic": f"bench_spans_{uuid.uuid4().hex[:6]}",
                                       "decisions_topic": f"bench_decisions_{uuid.uuid4().hex[:6]}"})
    if settings.kafka:
        from gatewatch.topics import ensure_topics, topic_specs

        ensure_topics(settings.kafka, topic_specs(settings))
    span_log = open_span_log(settings)
    producer = span_log.producer(settings.spans_topic)
    now = time.time()
    send(producer, simulate.scenario(seed=7, start=now - 180, duration_s=180, humans=20, bots=()))
    services: list[Service] = [PipelineService(settings, span_log=span_log, store=client, metrics_port=None),
                ControlPlaneService(settings, store=client, span_log=span_log),
                DetectorService(settings, store=client, span_log=span_log,
                                config=DetectorConfig(interval_s=1.0, model_dir=settings.data_dir / "bench-models"))]
    for service in services:
        service.start()
    watcher = Watcher(services[1].url, "bench")  # type: ignore[attr-defined]
    watcher.start()
    out: dict = {}
    try:
        time.sleep(5)  # first cycles: model bootstrapped on the humans
        # Transport floor: a decision written straight to the topic.
        floor_target = Target(scope=Scope.CLIENT, key="198.51.100.99")
        sent_at = time.time()
        span_log.producer(settings.decisions_topic).send([Message(Decision.new(
            DecisionKind.RATE_LIMIT, floor_target, Reason(detector="bench"), timedelta(seconds=60)).to_json(),
            floor_target.ref().encode())])
        arrived = wait_for(watcher, ("rate_limit", floor_target.key))
        out["baseline_topic_to_proxy_s"] = (arrived - sent_at) if arrived else None
        # A live bot and a live fault: spans sent every 0.5 s as they happen.
        onset = time.time()
        rng_seed, t = 8, onset
        wanted = {("circuit_open", "checkout->payment"), ("rate_limit", "203.0.8.1")}
        while time.time() - onset < 30 and not wanted <= watcher.seen.keys():
            chunk = simulate.Scenario()
            end = time.time()
            rng = np.random.default_rng(rng_seed)
            chunk.requests = simulate.bot(rng, "hammer", "203.0.8.1", t, end)
            chunk.calls = simulate.edge_calls(rng, "checkout", "payment", t, end, 20.0, (onset, end + 1, "errors"))
            send(producer, chunk.sort())
            t, rng_seed = end, rng_seed + 1
            time.sleep(0.5)
        bot_at = wait_for(watcher, ("rate_limit", "203.0.8.1"), 1)
        fault_at = wait_for(watcher, ("circuit_open", "checkout->payment"), 1)
        out["bot_onset_to_enforced_s"] = (bot_at - onset) if bot_at else None
        out["fault_onset_to_enforced_s"] = (fault_at - onset) if fault_at else None
    finally:
        watcher.stop = True
        for service in reversed(services):
            service.stop()
        client.command(f"DROP DATABASE IF EXISTS {settings.database}")
    return out


def main() -> int:
    import os

    data = Path(tempfile.mkdtemp(prefix="gatewatch-bench-det-"))
    base = Settings(kafka=os.environ.get("GATEWATCH_KAFKA", ""), clickhouse=f"chdb://{data / 'ch'}", data_dir=data)
    client = connect(base.clickhouse_dsn)
    results: dict[str, Any] = {"cycle": bench_cycle(client, base), "end_to_end": bench_end_to_end(client, base),
               "span_log": "kafka" if base.kafka else "embedded"}
    c, e = results["cycle"], results["end_to_end"]
    rows = [
        ("detection cycle, 1M spans in window", c["cycle_1000000_s"], "<= 1 s"),
        ("  baseline: same cycle, 100k spans", c["cycle_100000_s"], ""),
        ("client features query, 1M spans", c["features_narrow_s"], ""),
        ("  baseline: same from the span map (pre-0003)", c["features_span_map_s"], ""),
        ("  baseline: raw rows -> pandas, 100k spans", c["naive_pandas_100000_s"], ""),
        ("bot onset -> enforced at proxy", e.get("bot_onset_to_enforced_s"), "<= 10 s"),
        ("fault onset -> enforced at proxy", e.get("fault_onset_to_enforced_s"), "<= 10 s"),
        ("  baseline: decision on topic -> proxy", e.get("baseline_topic_to_proxy_s"), ""),
    ]
    print(f"{'measure':46} {'seconds':>9}  target   (span log: {results['span_log']})")
    for name, value, target in rows:
        shown = f"{value:9.3f}" if isinstance(value, float) else f"{'n/a':>9}"
        print(f"{name:46} {shown}  {target}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detectors.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
