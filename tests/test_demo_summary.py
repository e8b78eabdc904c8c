"""The demo summary is computed from the store: spans, decisions, alerts and ground truth."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from demo.groundtruth import StoreSink, TruthRow
from demo.summary import SummaryReader, Window

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def _span(store, db, at, service, kind, **attrs):
    store.insert(
        f"{db}.otel_traces",
        [[at.replace(tzinfo=None), uuid.uuid4().hex, uuid.uuid4().hex[:16], "GET", kind, service, attrs]],
        column_names=["Timestamp", "TraceId", "SpanId", "SpanName", "SpanKind", "ServiceName", "SpanAttributes"],
    )


def _decision(store, db, at, kind, scope, key, ttl_s=60.0):
    store.insert(
        f"{db}.decisions",
        [[uuid.uuid4(), kind, scope, key, "{}", "bot", 0.9, {}, "enforce", at, at + timedelta(seconds=ttl_s), "{}"]],
        column_names=["Id", "Kind", "Scope", "TargetKey", "Params", "Detector", "Score", "TopFeatures", "Mode",
                      "CreatedAt", "ExpiresAt", "Decision"],
    )


def test_summary_reads_bots_faults_and_decisions_from_the_store(store, settings):
    db = settings.database
    bot, human = "127.66.0.2", "127.10.0.2"
    StoreSink(store, db).record([
        TruthRow("run1", "short", "bot", "fast_scraper", "client", bot, T0, T0 + timedelta(seconds=40)),
        TruthRow("run1", "short", "human", "human", "client", human, T0, T0 + timedelta(seconds=40)),
        TruthRow("run1", "short", "fault", "error_rate", "edge", "checkout->payment", T0 + timedelta(seconds=10),
                 T0 + timedelta(seconds=30), {"service": "payment", "error_rate": 0.8}),
        TruthRow("other", "short", "bot", "fast_scraper", "client", "127.66.9.9", T0, T0),
    ])
    for i in range(10):  # bot: 10 requests before its decision at +10 s, then 10 of which 8 are 429
        _span(store, db, T0 + timedelta(seconds=i), "gateway", "Server", **{"client.address": bot,
              "http.response.status_code": "200"})
        _span(store, db, T0 + timedelta(seconds=11 + i), "gateway", "Server", **{"client.address": bot,
              "http.response.status_code": "429" if i < 8 else "200"})
        _span(store, db, T0 + timedelta(seconds=i), "gateway", "Server", **{"client.address": human,
              "http.response.status_code": "200"})
    for i in range(3):  # the sidecar's breaker answered open on the faulty edge
        _span(store, db, T0 + timedelta(seconds=15 + i), "checkout", "Client",
              **{"peer.service": "payment", "gatewatch.breaker.state": "open"})
    _decision(store, db, T0 + timedelta(seconds=10), "rate_limit", "client", bot)
    _decision(store, db, T0 + timedelta(seconds=14), "circuit_open", "edge", "checkout->payment", ttl_s=20)
    _decision(store, db, T0 + timedelta(seconds=5), "circuit_open", "edge", "checkout->payment")  # before the fault
    _decision(store, db, T0 + timedelta(seconds=15), "circuit_open", "edge", "storefront->catalog")  # no fault there

    start = int(T0.timestamp() * 1000)
    summary = SummaryReader(store, db).read(Window("run1", start, start + 60_000))

    assert summary.requests == 30
    assert summary.status_classes == {"2xx": 22, "4xx": 8}
    assert summary.spans == 33
    assert [b.label for b in summary.bots] == ["fast_scraper"]
    outcome = summary.bots[0]
    assert outcome.addresses == [bot]
    assert outcome.requests == 20
    assert outcome.flagged_ms == start + 10_000
    assert (outcome.requests_after, outcome.limited_after) == (10, 8)
    assert outcome.limited_share == 0.8
    [fault] = summary.faults
    assert fault.edge == "checkout->payment"
    assert fault.opened_ms == start + 14_000
    assert fault.opened_by.startswith("decision")
    assert fault.closed_ms == start + 34_000  # the decision's expiry: no circuit_close was taken
    assert fault.open_spans == 3
    assert summary.bots_limited == 1 and summary.circuits_opened == 1
    assert summary.human_clients == 1 and summary.humans_limited == 0
    assert summary.spurious_opens == 2


def test_summary_of_an_empty_run_has_zeros(store, settings):
    start = int(datetime.now(UTC).timestamp() * 1000)
    summary = SummaryReader(store, settings.database).read(Window("nothing", start, start + 1000))
    assert summary.requests == 0 and summary.spans == 0
    assert summary.bots == [] and summary.faults == [] and summary.decisions == []
    assert summary.bots_limited == 0 and summary.circuits_opened == 0
