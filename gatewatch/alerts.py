"""The alert contract: what detectors raise for people, stored in `alerts` and sent to Alertmanager."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gatewatch.decisions import utcnow


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(BaseModel):
    """One alert; `fingerprint` deduplicates repeats, `ends_at` set means resolved."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: str
    name: str
    severity: Severity = Severity.WARNING
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(default_factory=utcnow)
    ends_at: datetime | None = None
    decision_id: str = ""

    @property
    def resolved(self) -> bool:
        """True once the condition that raised the alert has ended."""
        return self.ends_at is not None
