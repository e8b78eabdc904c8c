"""Detector settings: windows, thresholds, modes and alert receivers (`GATEWATCH_DETECTORS_*`).

Window sizes, and why:
* client window 120 s: long enough for a few dozen requests from a bot at 1 r/s (ratios and entropy
  are stable), short enough that a bot is visible within one or two cycles of its onset;
* edge buckets of 10 s, current window 30 s, baseline 30 min: three buckets smooth single slow calls,
  30 min of history gives a median that follows slow drift but not a 30 s spike;
* tuner window 60 min of per-client per-minute rates: an hour covers the ordinary peaks of a route.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gatewatch.decisions import Mode
from gatewatch.semconv import GATEWAY_SERVICE


class DetectorConfig(BaseSettings):
    """Everything the detectors tune; defaults suit the demo and tests."""

    model_config = SettingsConfigDict(env_prefix="GATEWATCH_DETECTORS_", extra="ignore")

    gateway_services: str = Field(default=GATEWAY_SERVICE,
                                  description="ServiceNames of gateways (comma-separated); empty = any")
    interval_s: float = Field(default=5.0, gt=0, description="seconds between detection cycles")
    client_window_s: int = Field(default=120, ge=10)
    min_client_requests: int = Field(default=20, ge=1, description="fewer requests in the window: not scored")
    edge_bucket_s: int = Field(default=10, ge=1)
    edge_current_s: int = Field(default=30, ge=1)
    edge_baseline_s: int = Field(default=1800, ge=60)
    edge_min_calls: int = Field(default=10, ge=1, description="no spike verdict on fewer calls in the current window")
    edge_min_errors: int = Field(default=5, ge=1)
    edge_min_baseline_buckets: int = Field(default=3, ge=1,
                                           description="no spike verdict before this many baseline buckets")
    tuner_window_s: int = Field(default=3600, ge=60)

    bot_threshold: float = Field(default=0.8, gt=0, le=1, description="flag a client at this score")
    bot_release: float = Field(default=0.6, gt=0, le=1, description="keep a flagged client above this score")
    bot_rate_per_s: float = Field(default=1.0, gt=0, description="rate limit given to a flagged client "
                                  "(half its own recent rate when that is lower)")
    bot_burst: int = Field(default=2, ge=1)

    decision_ttl_s: float = Field(default=60.0, gt=0, description="how long a decision lives unless renewed")
    clear_cycles: int = Field(default=3, ge=1, description="clean cycles before a condition counts as over")

    tuner_quantile: float = Field(default=0.99, gt=0, lt=1)
    tuner_headroom: float = Field(default=2.0, ge=1)
    tuner_floor_per_s: float = Field(default=1.0, gt=0)
    tuner_max_step: float = Field(default=0.5, gt=0, description="largest relative change per update")
    tuner_hysteresis: float = Field(default=0.2, ge=0, description="smaller relative changes are not emitted")

    bot_mode: Mode = Mode.ENFORCE
    spike_mode: Mode = Mode.ENFORCE
    tuner_mode: Mode = Mode.DRY_RUN

    alertmanager_url: str = Field(default="", description="Alertmanager base URL; empty = not used")
    webhook_url: str = Field(default="", description="generic JSON webhook; empty = not used")
    alert_resend_s: float = Field(default=60.0, gt=0, description="re-send firing alerts to Alertmanager this often")

    model_dir: Path | None = Field(default=None, description="default <data dir>/models")

    def models_path(self, data_dir: Path) -> Path:
        """Where versioned model files live."""
        return self.model_dir or data_dir / "models"
