"""Offline bot scoring of access logs: the live client features, computed with pandas per cycle.

Online like the live loop: the log is replayed in cycles of `step_s`; at each cycle a client's
features use only its requests in the trailing window, so a score never sees later rows.
Input: a CSV with timestamp,client,method,path,status,user_agent[,subject], or an Apache/nginx
combined log (client = remote address, or the ident/user field with `client_field`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from detectors.botmodel import BotModel
from detectors.bots import scored
from detectors.features import AUTH_PATH, AUTOMATION_UA, CLIENT_FEATURES
from gatewatch.errors import GatewatchError

REQUIRED = ("timestamp", "client", "method", "path", "status", "user_agent")
COMBINED = re.compile(
    r'^(?P<address>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" '
    r'(?P<status>\d{3}) \S+(?: "[^"]*" "(?P<agent>[^"]*)")?'
)
MIN_CLIENTS_TO_BOOTSTRAP = 8


def _epoch(values: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(values, utc=True, format="mixed")
    return (stamps - pd.Timestamp(0, tz=UTC)).dt.total_seconds().to_numpy(float)


def read_csv(path: Path) -> pd.DataFrame:
    """A sessions CSV as a request frame (ts in epoch seconds); clear errors on bad input."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise GatewatchError(f"cannot read {path}: {exc}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise GatewatchError(f"{path}: missing columns {', '.join(missing)} (need {','.join(REQUIRED)})")
    return _normalise(frame, path)


def read_combined(path: Path, client_field: str = "address") -> pd.DataFrame:
    """An Apache/nginx combined access log as a request frame; unparsable lines are counted and skipped."""
    if client_field not in ("address", "ident", "user"):
        raise GatewatchError("--client-field must be address, ident or user")
    rows, bad = [], 0
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                match = COMBINED.match(line)
                if not match:
                    bad += int(bool(line.strip()))
                    continue
                when = datetime.strptime(match["time"], "%d/%b/%Y:%H:%M:%S %z")
                rows.append({"timestamp": when.isoformat(), "client": match[client_field], "method": match["method"],
                             "path": match["path"].split("?", 1)[0], "status": match["status"],
                             "user_agent": match["agent"] or "", "subject": match["user"].strip("-")})
    except OSError as exc:
        raise GatewatchError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise GatewatchError(f"{path}: no line in combined log format ({bad} unparsable)")
    return _normalise(pd.DataFrame(rows), path)


def _normalise(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    try:
        ts = _epoch(frame["timestamp"])
    except (ValueError, TypeError) as exc:
        raise GatewatchError(f"{path}: unreadable timestamp ({exc})") from None
    out = pd.DataFrame({
        "ts": ts, "client": frame["client"].astype(str), "method": frame["method"].astype(str),
        "path": frame["path"].astype(str), "status": pd.to_numeric(frame["status"], errors="coerce").fillna(0),
        "user_agent": frame["user_agent"].astype(str),
        "subject": frame["subject"].astype(str) if "subject" in frame.columns else "",
    })
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def _entropy_bits(paths: pd.Series) -> float:
    p = paths.value_counts(normalize=True).to_numpy(float)
    return float(-(p * np.log2(p)).sum())


def _cv(ts: pd.Series) -> float:
    gaps = np.diff(np.sort(ts.to_numpy(float)))
    return float(gaps.std() / gaps.mean()) if len(gaps) and gaps.mean() > 0 else 0.0


def window_features(rows: pd.DataFrame, window_s: float) -> pd.DataFrame:
    """CLIENT_FEATURES per client over these rows (the same definitions as the ClickHouse query)."""
    rows = rows.assign(sec=np.floor(rows["ts"]), auth=rows["path"].str.contains(AUTH_PATH, regex=True),
                       ua=rows["user_agent"].str.contains(AUTOMATION_UA, regex=True))
    per_second = rows.groupby(["client", "sec"]).size().groupby("client")
    groups = rows.groupby("client")
    n = groups.size()
    status = rows["status"]
    frame = pd.DataFrame({
        "n": n,
        "rate_per_s": n / window_s,
        "burstiness": per_second.max() / per_second.mean(),
        "interarrival_cv": groups["ts"].apply(_cv),
        "distinct_paths": groups["path"].nunique(),
        "path_entropy": groups["path"].apply(_entropy_bits),
        "ratio_4xx": rows.assign(x=(status // 100) == 4).groupby("client")["x"].mean(),
        "ratio_401": rows.assign(x=status == 401).groupby("client")["x"].mean(),
        "ratio_429": rows.assign(x=status == 429).groupby("client")["x"].mean(),
        "auth_share": groups["auth"].mean(),
        "ua_automation": groups["ua"].max().astype(float),
        "distinct_subjects": rows[rows["subject"] != ""].groupby("client")["subject"].nunique(),
        "distinct_agents": groups["user_agent"].nunique(),
        "last_ts": groups["ts"].max(),
    }).fillna({"distinct_subjects": 0})
    frame[list(CLIENT_FEATURES)] = frame[list(CLIENT_FEATURES)].astype(float)
    return frame.rename_axis("client").reset_index()


def replay(rows: pd.DataFrame, window_s: float, step_s: float) -> Iterator[tuple[float, pd.DataFrame]]:
    """(cycle time, features) every `step_s` from the first row to the last, as the live loop would see them."""
    if rows.empty:
        return
    ts = rows["ts"].to_numpy(float)
    t = float(np.ceil(ts[0] / step_s) * step_s)
    while t < ts[-1] + step_s:
        lo, hi = np.searchsorted(ts, t - window_s, side="right"), np.searchsorted(ts, t, side="right")
        if hi > lo:
            yield t, window_features(rows.iloc[lo:hi], window_s)
        t += step_s


@dataclass
class SessionVerdict:
    """One client's outcome over the whole log."""

    client: str
    score: float
    is_bot: bool
    first_flagged_at: float | None
    top_features: dict[str, float]


def score_sessions(rows: pd.DataFrame, model: BotModel | None, threshold: float, window_s: float = 120,
                   step_s: float = 5, min_requests: int = 20) -> list[SessionVerdict]:
    """Replay the log; without a model, one is fitted on the first window with enough clients (as live)."""
    verdicts: dict[str, SessionVerdict] = {}
    first = float(rows["ts"].min()) if len(rows) else 0.0
    for at, frame in replay(rows, window_s, step_s):
        if model is None and at - first >= window_s:  # bootstrap on a full window only, as live
            eligible = frame[frame["n"] >= min_requests]
            if len(eligible) >= MIN_CLIENTS_TO_BOOTSTRAP:
                model = BotModel.fit(eligible)
        if model is None:
            continue
        result = scored(model, frame, min_requests)
        for row in result.itertuples(index=False):
            v = verdicts.setdefault(str(row.client), SessionVerdict(str(row.client), 0.0, False, None, {}))
            if float(row.score) > v.score:
                v.score, v.top_features = float(row.score), dict(row.top_features)
            if float(row.score) >= threshold and not v.is_bot:
                v.is_bot, v.first_flagged_at = True, float(row.last_ts)
    for client in rows["client"].unique():
        verdicts.setdefault(str(client), SessionVerdict(str(client), 0.0, False, None, {}))
    return sorted(verdicts.values(), key=lambda v: -v.score)


def write_verdicts(verdicts: list[SessionVerdict], path: Path) -> None:
    """The `detect sessions` output CSV."""
    pd.DataFrame([{
        "client": v.client, "score": round(v.score, 4), "is_bot": v.is_bot,
        "first_flagged_at": datetime.fromtimestamp(v.first_flagged_at, UTC).isoformat() if v.first_flagged_at else "",
        "top_features": json.dumps(v.top_features),
    } for v in verdicts], columns=["client", "score", "is_bot", "first_flagged_at", "top_features"]).to_csv(
        path, index=False)
