"""One detection cycle: features from ClickHouse, scores, decisions, alerts. Time is a parameter,
so the live loop, the evaluation replay and the tests run the very same code."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from detectors import metrics, registry
from detectors.alerting import Alerter
from detectors.botmodel import BotModel
from detectors.bots import BotDetector
from detectors.config import DetectorConfig
from detectors.decider import DecisionKeeper, Publish, Want
from detectors.features import EdgeWindow, client_features, edge_buckets, route_client_rates
from detectors.spikes import Spike, SpikeDetector
from detectors.tuner import RateLimitTuner
from gatewatch.alerts import Alert, Severity
from gatewatch.decisions import Decision, DecisionKind, Reason, Scope, Target, utcnow

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)
MIN_CLIENTS_TO_BOOTSTRAP = 8
TUNER_EVERY_S = 60.0


@dataclass
class CycleResult:
    """What one cycle saw and did."""

    at: datetime
    clients: pd.DataFrame
    spikes: list[Spike] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    seconds: float = 0.0


def alert_for(decision: Decision) -> Alert:
    """The alert people see while a bot or spike decision is live."""
    name = "GatewatchBotDetected" if decision.target.scope == Scope.CLIENT else "GatewatchEdgeFailureSpike"
    features = ", ".join(f"{k}={v}" for k, v in decision.reason.top_features.items())
    return Alert(
        fingerprint=f"{name}:{decision.target.ref()}", name=name,
        severity=Severity.CRITICAL if decision.target.scope == Scope.EDGE else Severity.WARNING,
        labels={"scope": decision.target.scope.value, "target": decision.target.key,
                "detector": decision.reason.detector, "mode": decision.mode.value},
        annotations={"summary": f"{decision.kind.value} on {decision.target.key} ({decision.mode.value})",
                     "description": f"score {decision.reason.score:.2f}; {features}"},
        starts_at=decision.created_at, decision_id=decision.id,
    )


class DetectionCycle:
    """Holds the detectors, their decision keepers and the alerter across cycles."""

    def __init__(self, store: Client, database: str, config: DetectorConfig, publish: Publish,
                 alerter: Alerter | None = None, model: BotModel | None = None, model_dir: Path | None = None) -> None:
        self.store, self.db, self.config = store, database, config
        self.model, self.model_dir = model, model_dir
        self.alerter = alerter or Alerter([])
        self.bots, self.spikes, self.tuner = BotDetector(config), SpikeDetector(config), RateLimitTuner(config)
        # Route limits change slowly and are recomputed every minute: they live for several runs.
        ttl = {"bot": config.decision_ttl_s, "spike": config.decision_ttl_s,
               "tuner": max(config.decision_ttl_s, 5 * TUNER_EVERY_S)}
        self.keepers = {name: DecisionKeeper(ttl[name], config.clear_cycles, publish) for name in ttl}
        self._tuned_at: datetime | None = None
        self._first_seen: float | None = None  # earliest traffic seen, to know when a window is full
        self._last_spike: dict[str, datetime] = {}  # edge -> last cycle that saw it spike

    def run(self, now: datetime | None = None) -> CycleResult:
        """One full cycle at `now` (default: the wall clock)."""
        started = time.perf_counter()
        now = now or utcnow()
        frame = client_features(self.store, self.db, now, self.config.client_window_s, self.config.gateway_services)
        model = self._model(frame, now)
        result = CycleResult(now, frame)
        if model is not None:
            wants, result.clients = self.bots.wants(model, frame, self.keepers["bot"].holds)
            result.decisions += self.keepers["bot"].reconcile(wants, now)
        edges = edge_buckets(self.store, self.db, now, self.config.edge_baseline_s, self.config.edge_bucket_s)
        result.spikes = self.spikes.detect(edges, now)
        wants = [self._spike_want(s) for s in result.spikes] + self._unproven_recoveries(edges, result.spikes, now)
        result.decisions += self.keepers["spike"].reconcile(wants, now)
        if self._tuned_at is None or (now - self._tuned_at).total_seconds() >= TUNER_EVERY_S:
            self._tuned_at = now
            flagged = {t.split(":", 1)[1] for t in self.keepers["bot"].active}
            rates = route_client_rates(self.store, self.db, now, self.config.tuner_window_s,
                                       self.config.gateway_services)
            result.decisions += self.keepers["tuner"].reconcile(self.tuner.wants(rates, flagged), now)
        live = [d for name in ("bot", "spike") for d in self.keepers[name].active.values()]
        result.alerts = self.alerter.sync([alert_for(d) for d in live], now)
        result.seconds = time.perf_counter() - started
        self._observe(result)
        return result

    def restore(self, decisions: Sequence[Decision]) -> int:
        """Hand decisions taken before a restart to the keepers of their detectors; how many were taken."""
        taken = 0
        for decision in decisions:
            keeper = self.keepers.get(decision.reason.detector)
            if keeper is None:
                continue
            keeper.restore(decision)
            if decision.kind == DecisionKind.ROUTE_LIMIT:
                self.tuner.restore(decision)
            taken += 1
        return taken

    def _model(self, frame: pd.DataFrame, now: datetime) -> BotModel | None:
        """The loaded model; without one, fit an unsupervised one on the first full window with enough clients."""
        if self._first_seen is None and not frame.empty:
            self._first_seen = pd.to_datetime(frame["first_seen"]).min().timestamp()
        full = self._first_seen is not None and now.timestamp() - self._first_seen >= self.config.client_window_s
        if self.model is None and full:
            eligible = frame[frame["n"] >= self.config.min_client_requests]
            if len(eligible) >= MIN_CLIENTS_TO_BOOTSTRAP:
                self.model = BotModel.fit(eligible)
                self.model.metadata.update(trained_on="live window bootstrap", clients=len(eligible))
                if self.model_dir is not None:
                    log.info("bootstrapped a bot model: %s", registry.save(self.model, self.model_dir))
        return self.model

    def _unproven_recoveries(self, edges: list[EdgeWindow], spikes: list[Spike], now: datetime) -> list[Want]:
        """Open circuits whose edge carried too few calls to judge (the open circuit itself stops them):
        no evidence of recovery keeps them open, for at most one decision TTL after the last spike."""
        for spike in spikes:
            self._last_spike[spike.edge] = now
        judged, spiking = self.spikes.judged(edges, now), {s.edge for s in spikes}
        wants = []
        for decision in self.keepers["spike"].active.values():
            key = decision.target.key
            last = self._last_spike.get(key, decision.created_at)  # restored: as of its last renewal
            if key in spiking or key in judged:
                continue
            if (now - last).total_seconds() < self.config.decision_ttl_s:
                wants.append(Want(decision.kind, decision.target, decision.reason, decision.params, decision.mode))
        return wants

    def _spike_want(self, spike: Spike) -> Want:
        caller, callee = spike.edge.split("->", 1)
        reason = Reason(detector="spike", score=round(spike.score, 4), top_features={
            "error_rate": round(spike.error_rate, 4), "expected_error_rate": round(spike.expected_error_rate, 4),
            "p99_ms": round(spike.p99_ms, 2), "expected_p99_ms": round(spike.expected_p99_ms, 2),
            "onset_unix_s": round(spike.onset.timestamp(), 3)})
        params = {"caller": caller, "callee": callee, "cause": spike.kind}
        return Want(DecisionKind.CIRCUIT_OPEN, Target(scope=Scope.EDGE, key=spike.edge), reason, params,
                    self.config.spike_mode)

    def _observe(self, result: CycleResult) -> None:
        metrics.CYCLE_SECONDS.observe(result.seconds)
        metrics.CLIENTS_SCORED.set(len(result.clients))
        metrics.FLAGGED_CLIENTS.set(len(self.keepers["bot"].active))
        metrics.EDGE_SPIKES.set(len(self.keepers["spike"].active))
        for decision in result.decisions:
            metrics.DECISIONS.labels(decision.kind.value, decision.mode.value).inc()


def live_decisions(cycle: DetectionCycle) -> Sequence[Decision]:
    """Every decision the cycle's keepers hold now."""
    return [d for keeper in cycle.keepers.values() for d in keeper.active.values()]
