"""`gatewatch detectors train`: fit the bot model on stored traffic and ground_truth labels.

Samples are client feature rows at window ends every `step_s` over the training span; a client is a
bot in a sample when ground_truth has a bot entry for it that started before the window's last 10 s.
With labels, metrics are measured on the last quarter of the span (held out in time) before the
final fit on everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from detectors.botmodel import BotModel
from detectors.config import DetectorConfig
from detectors.features import client_features
from gatewatch.decisions import utcnow
from gatewatch.errors import GatewatchError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


@dataclass(frozen=True)
class BotInterval:
    """A labeled bot: client and active span (epoch seconds)."""

    client: str
    start: float
    end: float


def bot_labels(store: Client, db: str) -> list[BotInterval]:
    """Bot entries of `ground_truth`."""
    rows = store.query(
        f"SELECT EntityKey, toFloat64(StartAt), toFloat64(EndAt) FROM {db}.ground_truth "
        "WHERE Kind = 'bot' AND Scope = 'client'"
    ).result_rows
    return [BotInterval(str(r[0]), float(r[1]), float(r[2])) for r in rows]


def label(frame: pd.DataFrame, at: float, window_s: float, bots: list[BotInterval]) -> np.ndarray:
    """1 for rows whose client is a labeled bot active in the window ending at `at`."""
    active = {b.client for b in bots if b.start <= at - 10 and b.end >= at - window_s}
    return frame["client"].isin(active).to_numpy(int)


def samples(store: Client, db: str, config: DetectorConfig, start: datetime, end: datetime,
            step_s: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Feature rows of eligible clients, their labels and sample times, over [start, end]."""
    bots = bot_labels(store, db)
    frames, labels, times = [], [], []
    at = start + timedelta(seconds=config.client_window_s)
    while at <= end:
        frame = client_features(store, db, at, config.client_window_s, config.gateway_services)
        frame = frame[frame["n"] >= config.min_client_requests]
        if not frame.empty:
            frames.append(frame)
            labels.append(label(frame, at.timestamp(), config.client_window_s, bots))
            times.append(np.full(len(frame), at.timestamp()))
        at += timedelta(seconds=step_s)
    if not frames:
        raise GatewatchError("no client with enough requests in the training span: store traffic first")
    return pd.concat(frames, ignore_index=True), np.concatenate(labels), np.concatenate(times)


def classification_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and false-positive rate of boolean predictions."""
    tp = int((truth & predicted).sum())
    fp = int((~truth & predicted).sum())
    fn = int((truth & ~predicted).sum())
    negatives = int((~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "fpr": round(fp / negatives, 4) if negatives else 0.0, "tp": tp, "fp": fp, "fn": fn}


def train(store: Client, db: str, config: DetectorConfig, hours: float = 1.0, end: datetime | None = None,
          step_s: float = 30.0) -> BotModel:
    """Fit a bot model on the last `hours` of traffic; metadata records the window and held-out metrics."""
    end = end or utcnow()
    start = end - timedelta(hours=hours)
    frame, labels, times = samples(store, db, config, start, end, step_s)
    labeled = bool(labels.any())
    metrics: dict[str, float] = {}
    if labeled:
        cut = np.quantile(times, 0.75)
        early, late = times <= cut, times > cut
        if late.any() and labels[early].sum() >= 3:
            held = BotModel.fit(frame[early], labels[early])
            predicted = held.score(frame[late]) >= config.bot_threshold
            metrics = classification_metrics(labels[late].astype(bool), predicted)
    model = BotModel.fit(frame, labels if labeled else None)
    model.metadata.update(trained_at=utcnow().isoformat(), window_start=start.isoformat(), window_end=end.isoformat(),
                          samples=len(frame), positives=int(labels.sum()), held_out_metrics=metrics)
    return model
