"""Detectors restarting: live decisions come back from the `decisions` table, none dropped or re-issued."""

from __future__ import annotations

from datetime import timedelta

from detectors.config import DetectorConfig
from detectors.cycle import DetectionCycle
from detectors.decider import Want
from detectors.restore import live_decisions_in_store
from detectors.service import DetectorService
from detectors.sinks import DECISION_COLUMNS, decision_row
from gatewatch.decisions import Decision, DecisionKind, Mode, Reason, Scope, Target, utcnow


def _decision(kind: DecisionKind, scope: Scope, key: str, detector: str, age_s: float, ttl_s: float = 60,
              params: dict | None = None) -> Decision:
    created = utcnow() - timedelta(seconds=age_s)
    return Decision(kind=kind, target=Target(scope=scope, key=key), reason=Reason(detector=detector, score=0.9),
                    params=params or {}, mode=Mode.ENFORCE, created_at=created,
                    expires_at=created + timedelta(seconds=ttl_s))


def _stored(store, settings) -> dict[str, Decision]:
    bot = _decision(DecisionKind.RATE_LIMIT, Scope.CLIENT, "203.0.113.7", "bot", 50,
                    params={"rate_per_s": 1.0, "burst": 2})
    renewed = bot.model_copy(update={"created_at": bot.created_at + timedelta(seconds=30),
                                     "expires_at": bot.expires_at + timedelta(seconds=30)})
    circuit = _decision(DecisionKind.CIRCUIT_OPEN, Scope.EDGE, "checkout->payment", "spike", 10,
                        params={"caller": "checkout", "callee": "payment", "cause": "errors"})
    opened = _decision(DecisionKind.CIRCUIT_OPEN, Scope.EDGE, "catalog->inventory", "spike", 20)
    closed = _decision(DecisionKind.CIRCUIT_CLOSE, Scope.EDGE, "catalog->inventory", "spike", 5)
    expired = _decision(DecisionKind.RATE_LIMIT, Scope.CLIENT, "198.51.100.9", "bot", 120)
    route = _decision(DecisionKind.ROUTE_LIMIT, Scope.ROUTE, "GET /api/products", "tuner", 30, ttl_s=300,
                      params={"rate_per_s": 4.0, "burst": 8, "classes": {"browser": {"rate_per_s": 4.0, "burst": 8}}})
    rows = [decision_row(d) for d in (bot, renewed, circuit, opened, closed, expired, route)]
    store.insert(f"{settings.database}.decisions", rows, column_names=DECISION_COLUMNS)
    return {"bot": renewed, "spike": circuit, "tuner": route}


def test_live_decisions_come_back_newest_per_target(store, settings):
    live = _stored(store, settings)
    found = {d.target.ref(): d for d in live_decisions_in_store(store, settings.database, utcnow())}
    # The renewal (same id, later expiry) wins; the released and the expired targets stay gone.
    assert found == {d.target.ref(): d for d in live.values()}


def test_restored_cycle_neither_reissues_nor_forgets(store, settings):
    live = _stored(store, settings)
    sent: list[Decision] = []
    cycle = DetectionCycle(store, settings.database, DetectorConfig(clear_cycles=2), sent.extend)
    assert cycle.restore(live_decisions_in_store(store, settings.database, utcnow())) == 3
    assert cycle.tuner.limits == {("GET /api/products", "browser"): 4.0}
    keeper, circuit = cycle.keepers["spike"], live["spike"]
    # Still wanted: held without a new decision (same id, not half-expired yet).
    want = Want(circuit.kind, circuit.target, circuit.reason, circuit.params, circuit.mode)
    assert keeper.reconcile([want], utcnow()) == [] and keeper.active[circuit.target.ref()].id == circuit.id
    # No longer wanted: released after clear_cycles with a circuit_close, as if never restarted.
    keeper.reconcile([], utcnow())
    assert [d.kind for d in keeper.reconcile([], utcnow())] == [DecisionKind.CIRCUIT_CLOSE]


def test_detector_service_restores_at_start(store, settings):
    live = _stored(store, settings)
    service = DetectorService(settings, store=store, config=DetectorConfig(interval_s=600))
    service.start()
    try:
        assert service.cycle is not None
        held = {ref: d.id for keeper in service.cycle.keepers.values() for ref, d in keeper.active.items()}
        assert held == {d.target.ref(): d.id for d in live.values()}
    finally:
        service.stop()


def test_open_circuit_holds_while_it_stops_the_evidence(store, settings):
    """After circuit_open the edge carries no calls (our breaker refuses them): that is no recovery, so
    the circuit stays open for one TTL after the last spike, then closes (the demo closed it mid-fault)."""
    from datetime import UTC, datetime

    t0 = int(utcnow().timestamp()) - 600
    store.command(f"""
INSERT INTO {settings.database}.otel_traces (Timestamp, TraceId, SpanId, SpanName, SpanKind, ServiceName,
                                             SpanAttributes, Duration, StatusCode)
SELECT fromUnixTimestamp64Nano(toInt64(({t0} + number / 5) * 1e9)), hex(number), hex(number), 'POST', 'Client',
       'checkout', map('peer.service', 'payment', 'http.response.status_code',
                       if(number >= 1500 AND number % 5 != 0, '503', '200')), 10000000, 'Unset'
FROM numbers(1650)""")  # 5 calls/s: healthy for 300 s, then 80 % errors for 30 s, then nothing
    sent: list[Decision] = []
    cycle = DetectionCycle(store, settings.database, DetectorConfig(decision_ttl_s=60), sent.extend)

    def kinds_at(offset: int) -> list[DecisionKind]:
        before = len(sent)
        cycle.run(datetime.fromtimestamp(t0 + offset, UTC))
        return [d.kind for d in sent[before:] if d.target.scope == Scope.EDGE]

    assert kinds_at(330) == [DecisionKind.CIRCUIT_OPEN]
    assert kinds_at(345) == []  # still failing
    for offset in (370, 380, 390, 400):  # no calls at all: held, not closed
        assert DecisionKind.CIRCUIT_CLOSE not in kinds_at(offset)
    closed = [kind for offset in (410, 420, 430, 440) for kind in kinds_at(offset)]
    assert DecisionKind.CIRCUIT_CLOSE in closed
