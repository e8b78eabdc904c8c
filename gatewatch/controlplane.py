"""The control-plane API contract between the detectors' process (server) and the proxies (clients).

* `GET /v1/decisions` -> `DecisionSnapshot` of the active decisions (people, scripts, proxies).
* `GET /v1/decisions/watch?since=<version>&timeout=<s>` -> long poll: answers as soon as the
  snapshot's version is greater than `since`, or with the unchanged snapshot after `timeout`
  seconds (at most 60). Proxies loop on it; the version only grows.
* `GET /v1/alerts` -> `{"alerts": [Alert, ...]}`.
Every call needs `Authorization: Bearer <GATEWATCH_CONTROL_TOKEN>`; 401 otherwise.
Proxies keep the last snapshot when the control plane is unreachable (fail static) and drop each
decision at its `expires_at`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from gatewatch.decisions import Decision
from gatewatch.decisionwire import ALERTS_PATH, DECISIONS_PATH, MAX_WATCH_TIMEOUT_S, WATCH_PATH

__all__ = ["ALERTS_PATH", "DECISIONS_PATH", "MAX_WATCH_TIMEOUT_S", "WATCH_PATH", "DecisionSnapshot"]


class DecisionSnapshot(BaseModel):
    """The active decisions at one version of the control plane's state."""

    version: int = Field(ge=0)
    decisions: list[Decision] = Field(default_factory=list)
