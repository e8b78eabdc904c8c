"""Robust statistics shared by the detectors: median/MAD scales and online robust z-scores."""

from __future__ import annotations

from collections import deque

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


def mad_scale(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Median absolute deviation scaled to a standard deviation (robust to outliers)."""
    median = np.median(values, axis=axis)
    return MAD_TO_SIGMA * np.median(np.abs(values - median), axis=axis)


def z_to_score(z: np.ndarray | float, knee: float = 4.0, width: float = 1.5) -> np.ndarray:
    """Map a robust z to [0, 1]: about 0 below 2, 0.5 at `knee` sigmas, about 1 beyond knee + 3 widths."""
    return np.asarray(1.0 / (1.0 + np.exp(-(np.abs(z) - knee) / width)))


class OnlineRobustZ:
    """Robust z of each new value against a trailing window of earlier values (never later ones)."""

    def __init__(self, window: int = 300, warmup: int = 30) -> None:
        self._history: deque[float] = deque(maxlen=window)
        self._warmup = warmup

    def update(self, value: float) -> float:
        """The z of `value` against history so far, then add it to the history."""
        z = 0.0
        if len(self._history) >= self._warmup:
            past = np.fromiter(self._history, float)
            median = float(np.median(past))
            scale = float(mad_scale(past))
            if scale <= 0:
                scale = max(float(np.std(past)), 1e-9 + abs(median) * 1e-3)
            z = (value - median) / scale
        self._history.append(value)
        return z
