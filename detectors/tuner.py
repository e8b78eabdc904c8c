"""Rate-limit tuner: per route and client class, a limit from the normal traffic distribution.

limit = quantile(per-client rate) x headroom, never below the floor, moved at most `max_step` per
update (relative) and not moved at all for changes under `hysteresis`, so limits follow traffic
slowly and never oscillate. Emitted as route_limit decisions (one per route, classes in params).
"""

from __future__ import annotations

import math

import pandas as pd

from detectors.config import DetectorConfig
from detectors.decider import Want
from gatewatch.decisions import Decision, DecisionKind, Reason, Scope, Target


class RateLimitTuner:
    """Keeps the current limit per (route, class) and proposes bounded, damped changes."""

    name = "tuner"

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.limits: dict[tuple[str, str], float] = {}

    def target_limit(self, per_min: pd.Series) -> float:
        """The undamped limit for one class on one route, in requests per second per client."""
        quantile = float(per_min.quantile(self.config.tuner_quantile)) / 60.0
        return max(self.config.tuner_floor_per_s, quantile * self.config.tuner_headroom)

    def step(self, key: tuple[str, str], target: float) -> float:
        """Move the current limit toward `target`, bounded and with hysteresis."""
        current = self.limits.get(key)
        if current is None:
            self.limits[key] = target
            return target
        step = self.config.tuner_max_step
        bounded = min(max(target, current * (1 - step)), current * (1 + step))
        if abs(bounded - current) / current >= self.config.tuner_hysteresis:
            self.limits[key] = bounded
        return self.limits[key]

    def restore(self, decision: Decision) -> None:
        """Resume from a route_limit issued before a restart: its per-class limits are the current ones."""
        for client_class, limit in decision.params.get("classes", {}).items():
            self.limits[(decision.target.key, str(client_class))] = float(limit["rate_per_s"])

    def wants(self, rates: pd.DataFrame, flagged_clients: set[str]) -> list[Want]:
        """route_limit wants from per-client per-minute counts; flagged clients are not 'normal'."""
        if rates.empty:
            return []
        normal = rates[~rates["client"].isin(flagged_clients)]
        wants = []
        for route, by_route in normal.groupby("route"):
            classes = {}
            for client_class, group in by_route.groupby("client_class"):
                limit = self.step((str(route), str(client_class)), self.target_limit(group["per_min"]))
                classes[str(client_class)] = {"rate_per_s": round(limit, 3), "burst": math.ceil(limit * 2)}
            overall = max(c["rate_per_s"] for c in classes.values())
            params = {"rate_per_s": overall, "burst": math.ceil(overall * 2), "classes": classes}
            reason = Reason(detector=self.name, score=0.0,
                            top_features={"clients": float(by_route["client"].nunique())})
            target = Target(scope=Scope.ROUTE, key=str(route))
            wants.append(Want(DecisionKind.ROUTE_LIMIT, target, reason, params, self.config.tuner_mode))
        return wants
