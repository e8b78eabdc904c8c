"""Failure-spike detector: per service edge, error-rate and latency spikes with an onset time.

Each edge's recent buckets are compared with what its own baseline predicts now. The baseline is a
HuberRegressor trend over the last 30 minutes, so slow drift moves the expectation instead of
raising alarms, and past outliers barely pull it. The residual spread is a MAD. Low volume cannot
alarm: a verdict needs `edge_min_calls` calls and `edge_min_errors` errors in the current window,
and the binomial noise of the observed rate widens the threshold. No baseline, no verdict: an edge
needs `edge_min_baseline_buckets` buckets of history (each with a few calls) before it can alarm, so
cold starts (first connections, startup errors, a stalled host before any history) open no circuit,
and a latency rise must show in at least two current buckets (one stall is not a failure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sklearn.linear_model import HuberRegressor

from detectors.config import DetectorConfig
from detectors.features import EdgeWindow
from detectors.robust import mad_scale, z_to_score

PRIOR_ERROR_RATE = 0.01  # floor of the expected rate in the binomial noise (a clean baseline is not 0 %)
MIN_RATE_EXCESS = 0.05   # an error-rate rise below 5 points is never a spike
MIN_LATENCY_RATIO = 1.5  # a p99 below 1.5x the expected p99 is never a spike
MIN_LATENCY_RISE_MS = 50.0  # nor a rise under 50 ms: millisecond wobble on a busy host is not a failure
SPIKE_Z = 4.0
MIN_BUCKET_CALLS = 3  # a bucket with fewer calls says nothing about an edge's latency or error rate


@dataclass(frozen=True)
class Spike:
    """One edge in trouble, and the evidence."""

    edge: str
    kind: str  # errors | latency
    score: float
    onset: datetime
    calls: int
    error_rate: float
    expected_error_rate: float
    p99_ms: float
    expected_p99_ms: float


def _trend(times: np.ndarray, values: np.ndarray, at: float) -> tuple[float, float]:
    """Robust prediction at `at` and residual spread from a baseline series."""
    if len(values) < 6:
        median = float(np.median(values))
        return median, float(mad_scale(values))
    x = ((times - times.mean()) / 60.0).reshape(-1, 1)  # minutes, centred: well-conditioned
    model = HuberRegressor(epsilon=1.5, max_iter=200).fit(x, values)
    residual = values - model.predict(x)
    return float(model.predict(np.array([[(at - times.mean()) / 60.0]]))[0]), float(mad_scale(residual))


def _epoch(column: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(column)
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize(UTC)
    return stamps.map(lambda t: t.timestamp()).to_numpy(float)


class SpikeDetector:
    """Finds error and latency spikes on edges."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config

    def detect(self, edges: list[EdgeWindow], now: datetime) -> list[Spike]:
        """Spikes on these edges at `now` (at most one per edge: errors before latency)."""
        found = []
        for edge in edges:
            spike = self._check(edge, now)
            if spike:
                found.append(spike)
        return found

    def judged(self, edges: list[EdgeWindow], now: datetime) -> set[str]:
        """Edges with enough calls in the current window for a verdict either way."""
        cut = now.timestamp() - self.config.edge_current_s
        calls = {edge.key: int(edge.buckets["calls"][_epoch(edge.buckets["bucket"]) >= cut].sum()) for edge in edges}
        return {key for key, n in calls.items() if n >= self.config.edge_min_calls}

    def _check(self, edge: EdgeWindow, now: datetime) -> Spike | None:
        frame = edge.buckets
        times = _epoch(frame["bucket"])
        cut = now.timestamp() - self.config.edge_current_s
        current = frame[times >= cut]
        # Sparse buckets (a p99 of one or two calls is just their max) neither make nor move a baseline.
        in_base = (times < cut) & (frame["calls"].to_numpy() >= MIN_BUCKET_CALLS)
        base, base_times = frame[in_base], times[in_base]
        calls = int(current["calls"].sum())
        if calls < self.config.edge_min_calls or len(base) < self.config.edge_min_baseline_buckets:
            return None
        errors = int(current["errors"].sum())
        rate = errors / calls
        at = now.timestamp()
        expected, spread = _trend(base_times, (base["errors"] / base["calls"]).to_numpy(float), at)
        expected = min(max(expected, 0.0), 1.0)
        noise = math.sqrt(spread**2 + max(expected, PRIOR_ERROR_RATE) * (1 - expected) / calls)
        z_err = (rate - expected) / max(noise, 1e-6)
        log_expected, log_spread = _trend(base_times, np.log(base["p99_ms"].to_numpy(float) + 1e-3), at)
        expected_p99 = math.exp(log_expected)
        dense = current[current["calls"] >= MIN_BUCKET_CALLS]["p99_ms"].to_numpy(float)
        p99 = float(np.median(dense)) if len(dense) else float(np.median(current["p99_ms"]))
        z_lat = (math.log(p99 + 1e-3) - log_expected) / max(log_spread, 0.05)
        latency_floor = max(MIN_LATENCY_RATIO * expected_p99, expected_p99 + MIN_LATENCY_RISE_MS)
        kind, z = "", 0.0
        if errors >= self.config.edge_min_errors and rate - expected >= MIN_RATE_EXCESS and z_err >= SPIKE_Z:
            kind, z = "errors", z_err
        elif p99 >= latency_floor and z_lat >= SPIKE_Z and int((dense >= latency_floor).sum()) >= 2:
            kind, z = "latency", z_lat
        if not kind:
            return None
        onset = self._onset(frame, times, kind, expected, latency_floor)
        return Spike(edge.key, kind, float(z_to_score(z)), onset, calls, rate, expected, p99, expected_p99)

    def _onset(self, frame: pd.DataFrame, times: np.ndarray, kind: str, expected: float,
               latency_floor: float) -> datetime:
        """Start of the trailing run of abnormal buckets (buckets with too few calls do not break it)."""
        onset = times[-1]
        for i in range(len(frame) - 1, -1, -1):
            calls = int(frame["calls"].iloc[i])
            if calls < MIN_BUCKET_CALLS:
                continue
            if kind == "errors":
                bad = frame["errors"].iloc[i] / calls >= expected + MIN_RATE_EXCESS
            else:
                bad = frame["p99_ms"].iloc[i] >= latency_floor
            if not bad:
                break
            onset = times[i]
        return datetime.fromtimestamp(onset, UTC)


