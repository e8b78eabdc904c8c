"""Bot detector: scores every client active in the window and wants a rate limit on the bots."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from detectors.botmodel import BotModel
from detectors.config import DetectorConfig
from detectors.decider import Want
from gatewatch.decisions import DecisionKind, Reason, Scope, Target

# The slowest a flagged client is held to (one request a minute and a bit).
MIN_BOT_RATE_PER_S = 1 / 64


def slowed_rate(observed_per_s: float, cap_per_s: float) -> float:
    """The rate a flagged client is limited to: `cap_per_s`, or half its own recent rate when that is
    lower (a limit above what a low-and-slow bot sends would not slow it), rounded down to a power
    of two so that the decision's parameters, and with them the decision, stay put between cycles."""
    half = observed_per_s / 2
    if half >= cap_per_s:
        return cap_per_s
    return 2.0 ** math.floor(math.log2(max(half, MIN_BOT_RATE_PER_S)))  # the minimum is a power of two


def scored(model: BotModel, frame: pd.DataFrame, min_requests: int) -> pd.DataFrame:
    """`frame` with `score` and `top_features`; clients below `min_requests` score 0 (too little evidence)."""
    out = frame.copy()
    out["score"] = 0.0
    out["top_features"] = [{} for _ in range(len(out))]
    enough = (out["n"] >= min_requests).to_numpy()
    if enough.any():
        subset = out[enough]
        out.loc[enough, "score"] = model.score(subset)
        out.loc[enough, "top_features"] = pd.Series(model.explain(subset), index=subset.index)
    return out


class BotDetector:
    """Flags at `bot_threshold`, keeps a flagged client while its score stays above `bot_release`."""

    name = "bot"

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config

    def wants(
        self, model: BotModel, frame: pd.DataFrame, holds: Callable[[Target], bool]
    ) -> tuple[list[Want], pd.DataFrame]:
        """The rate limits wanted now, and the scored clients."""
        result = scored(model, frame, self.config.min_client_requests)
        wants = []
        for row in result.itertuples(index=False):
            target = Target(scope=Scope.CLIENT, key=str(row.client))
            score = float(row.score)
            if score >= self.config.bot_threshold or (holds(target) and score >= self.config.bot_release):
                reason = Reason(detector=self.name, score=round(score, 4), top_features=dict(row.top_features))
                rate = slowed_rate(float(row.rate_per_s), self.config.bot_rate_per_s)
                params = {"rate_per_s": rate, "burst": self.config.bot_burst}
                wants.append(Want(DecisionKind.RATE_LIMIT, target, reason, params, self.config.bot_mode))
        return wants, result


