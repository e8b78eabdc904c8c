"""Versioned model files: `<dir>/bot-v<N>.joblib` plus `bot-v<N>.json` with window and metrics.

Files are only ever loaded from the configured model directory (joblib unpickles; never load
model files from an untrusted place).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import joblib

from detectors.botmodel import BotModel
from detectors.features import CLIENT_FEATURES
from gatewatch.errors import GatewatchError

log = logging.getLogger(__name__)
_VERSION = re.compile(r"^bot-v(\d+)\.joblib$")


def versions(directory: Path) -> list[int]:
    """Saved model versions, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _VERSION.match(p.name)))


def save(model: BotModel, directory: Path) -> Path:
    """Write the model as the next version; returns the model file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    version = (versions(directory) or [0])[-1] + 1
    model.metadata["version"] = version
    path = directory / f"bot-v{version}.joblib"
    joblib.dump(model, path)
    path.with_suffix(".json").write_text(json.dumps(model.metadata, indent=2, default=str))
    return path


def load_latest(directory: Path) -> BotModel | None:
    """The newest saved model, or None when there is none."""
    found = versions(directory)
    if not found:
        return None
    path = directory / f"bot-v{found[-1]}.joblib"
    try:
        model = joblib.load(path)
    except Exception as exc:
        raise GatewatchError(f"cannot load model {path}: {exc}; retrain with gatewatch detectors train") from None
    if not isinstance(model, BotModel):
        raise GatewatchError(f"{path} is not a gatewatch bot model")
    trained_on = model.metadata.get("features")
    if trained_on != list(CLIENT_FEATURES):
        # A model from before a feature was added would fail on every row; the detector bootstraps
        # a fresh one instead (or `gatewatch detectors train` fits one on stored traffic).
        log.warning("ignoring bot model %s: trained on features %s, these are %s; retrain with "
                    "gatewatch detectors train", path.name, trained_on, list(CLIENT_FEATURES))
        return None
    return model


def metadata(directory: Path) -> list[dict[str, Any]]:
    """Metadata of every saved version."""
    return [json.loads((directory / f"bot-v{v}.json").read_text()) for v in versions(directory)]
