"""The bot model: IsolationForest on recent traffic, stacked with gradient boosting when labels exist.

* unsupervised: the mean of two robust z-scores against the training clients, IsolationForest's
  anomaly score and the robust distance (mean of the three largest per-feature |z|), mapped to
  [0, 1] by a logistic that is 0.5 five deviations out (ordinary clients sit near 0). IsolationForest
  alone saturates on the few dozen clients of a short window; the distance keeps the scale. The
  clients a first fit finds anomalous, combined or in either view, are left out of the fit that sets
  these references;
* supervised (labels from `ground_truth`): gradient boosting over the features plus that anomaly
  score, wrapped in sigmoid (Platt) calibration, so its probability is the combined, calibrated score.
Explanations are robust z-scores against normal training clients, weighted by feature importance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest

from detectors.features import CLIENT_FEATURES
from detectors.robust import mad_scale

# Heavy-tailed counts and rates are compared on a log scale.
_LOG_FEATURES = {"rate_per_s", "burstiness", "distinct_paths", "distinct_subjects", "distinct_agents"}


def design_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The model's input: CLIENT_FEATURES in order, heavy-tailed ones log1p-transformed."""
    columns = [
        np.log1p(frame[name].to_numpy(float)) if name in _LOG_FEATURES else frame[name].to_numpy(float)
        for name in CLIENT_FEATURES
    ]
    return np.nan_to_num(np.column_stack(columns), nan=0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


UNSUPERVISED_KNEE = 5.0  # robust deviations at which the unsupervised score is 0.5
# An unlabeled fit learns "normal" from the clients a first fit scores below TRIM_AT deviations
# (a score of 0.12) and below TRIM_EITHER_AT in each of its two views alone, when at least half of
# them, and MIN_ORDINARY, are. IsolationForest takes a group of alike clients (one scraper on six
# addresses, a quarter of a short window) for a dense, ordinary region, so the group can stay under
# the combined score while the distance alone finds each of them 4-5 deviations out.
TRIM_AT = 3.0
TRIM_EITHER_AT = 4.0
MIN_ORDINARY = 5


def _robust_z(values: np.ndarray, mid: float, spread: float) -> np.ndarray:
    return (values - mid) / max(spread, 1e-3)


def _combined(z_if: np.ndarray, z_dist: np.ndarray) -> np.ndarray:
    return 0.5 * (np.clip(z_if, -10, 50) + np.clip(z_dist, -10, 50))


@dataclass
class BotModel:
    """A fitted bot model; `score` maps feature rows to [0, 1]."""

    iforest: IsolationForest
    median: np.ndarray
    spread: np.ndarray
    if_mid: float = 0.0
    if_spread: float = 1.0
    dist_mid: float = 0.0
    dist_spread: float = 1.0
    supervised: Any | None = None
    importance: np.ndarray = field(default_factory=lambda: np.ones(len(CLIENT_FEATURES)))
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, labels: np.ndarray | None = None, seed: int = 0) -> BotModel:
        """Fit on client feature rows; `labels` (1 = bot) enable the supervised stage.

        Without labels, clients a first fit finds anomalous are left out of the refit that learns
        what normal is: a bootstrap window can hold bots, and a group of alike bots (one scraper on
        several addresses) otherwise looks ordinary to IsolationForest and widens every spread.
        """
        if labels is not None:
            return cls._fit(frame, labels, seed)
        first = cls._fit(frame, None, seed)
        ordinary = first._ordinary(design_matrix(frame))
        if ordinary.all() or ordinary.sum() < max(MIN_ORDINARY, len(frame) // 2):
            return first  # nothing to leave out, or too few clients would be left to learn from
        model = cls._fit(frame[ordinary], None, seed)
        model.metadata.update(samples=len(frame), left_out=int((~ordinary).sum()))
        return model

    @classmethod
    def _fit(cls, frame: pd.DataFrame, labels: np.ndarray | None, seed: int) -> BotModel:
        x = design_matrix(frame)
        has_normal = labels is not None and labels.sum() < len(labels)
        normal = x[labels == 0] if has_normal and labels is not None else x
        iforest = IsolationForest(n_estimators=100, random_state=seed).fit(x)
        median = np.median(normal, axis=0)
        # A floor on the spread: a few dozen similar clients must not make small differences look huge.
        model = cls(iforest, median, np.maximum(mad_scale(normal, axis=0), np.maximum(0.1 * np.abs(median), 0.05)))
        raw_if, raw_dist = -iforest.score_samples(normal), model._distance(normal)
        model.if_mid, model.if_spread = float(np.median(raw_if)), max(float(mad_scale(raw_if)), 0.02)
        model.dist_mid = float(np.median(raw_dist))
        model.dist_spread = max(float(mad_scale(raw_dist)), 0.25 * model.dist_mid, 0.5)
        model.metadata = {"samples": len(frame), "features": list(CLIENT_FEATURES), "supervised": False}
        if labels is not None and min(labels.sum(), len(labels) - labels.sum()) >= 3:
            model._fit_supervised(x, labels, seed)
        return model

    def _distance(self, x: np.ndarray) -> np.ndarray:
        z = np.minimum(np.abs((x - self.median) / self.spread), 50.0)
        return np.sort(z, axis=1)[:, -3:].mean(axis=1)

    def _views(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IsolationForest's anomaly and the robust distance, each in deviations from normal training clients."""
        z_if = _robust_z(-self.iforest.score_samples(x), self.if_mid, self.if_spread)
        return z_if, _robust_z(self._distance(x), self.dist_mid, self.dist_spread)

    def anomaly(self, x: np.ndarray) -> np.ndarray:
        """Combined unsupervised anomaly in robust deviations from normal training clients."""
        return _combined(*self._views(x))

    def _ordinary(self, x: np.ndarray) -> np.ndarray:
        """Which rows an unlabeled refit may learn normal from: under TRIM_AT combined and TRIM_EITHER_AT alone."""
        z_if, z_dist = self._views(x)
        return (_combined(z_if, z_dist) < TRIM_AT) & (np.maximum(z_if, z_dist) < TRIM_EITHER_AT)

    def _fit_supervised(self, x: np.ndarray, labels: np.ndarray, seed: int) -> None:
        stacked = np.column_stack([x, self.anomaly(x)])
        booster = GradientBoostingClassifier(n_estimators=80, max_depth=3, random_state=seed)
        folds = int(min(3, labels.sum(), len(labels) - labels.sum()))
        self.supervised = CalibratedClassifierCV(booster, method="sigmoid", cv=folds).fit(stacked, labels)
        importances = np.mean([c.estimator.feature_importances_ for c in self.supervised.calibrated_classifiers_],
                              axis=0)
        self.importance = importances[: len(CLIENT_FEATURES)] + 1e-3
        self.metadata.update(supervised=True, positives=int(labels.sum()))

    def unsupervised_score(self, x: np.ndarray) -> np.ndarray:
        """Calibrated unsupervised score in [0, 1]."""
        return _sigmoid(self.anomaly(x) - UNSUPERVISED_KNEE)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Bot score in [0, 1] per row."""
        if frame.empty:
            return np.zeros(0)
        x = design_matrix(frame)
        if self.supervised is None:
            return self.unsupervised_score(x)
        stacked = np.column_stack([x, self.anomaly(x)])
        return np.asarray(self.supervised.predict_proba(stacked)[:, 1])

    def explain(self, frame: pd.DataFrame, top: int = 3) -> list[dict[str, float]]:
        """Per row, the `top` features that deviate most from normal clients, as signed robust z."""
        z = (design_matrix(frame) - self.median) / self.spread
        weight = np.abs(z) * self.importance
        out = []
        for row_z, row_w in zip(z, weight, strict=True):
            order = np.argsort(-row_w)[:top]
            out.append({CLIENT_FEATURES[i]: round(float(row_z[i]), 2) for i in order})
        return out
