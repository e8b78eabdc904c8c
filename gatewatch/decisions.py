"""The decision contract: what detectors tell proxies to do, and for how long."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatewatch.decisionwire import DecisionKind, Mode, Scope


class Target(BaseModel):
    """What a decision applies to: a client key, a route (`GET /api/login`) or an edge (`a->b`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Scope
    key: str = Field(min_length=1, max_length=512)

    def ref(self) -> str:
        """The Kafka key / cache key of this target: `scope:key`."""
        return f"{self.scope.value}:{self.key}"


class Reason(BaseModel):
    """Why a detector took the decision, so every action is explained."""

    model_config = ConfigDict(extra="forbid")

    detector: str
    score: float = 0.0
    top_features: dict[str, float] = Field(default_factory=dict)


def utcnow() -> datetime:
    """Timezone-aware now, so every timestamp in the contract is RFC 3339 with offset."""
    return datetime.now(UTC)


class Decision(BaseModel):
    """One decision; proxies apply it to its target until `expires_at`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    kind: DecisionKind
    target: Target
    params: dict[str, Any] = Field(default_factory=dict)
    reason: Reason
    mode: Mode = Mode.ENFORCE
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime

    @model_validator(mode="after")
    def _check(self) -> Decision:
        if self.created_at.tzinfo is None or self.expires_at.tzinfo is None:
            raise ValueError("created_at and expires_at need a timezone (RFC 3339)")
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self

    def is_active(self, now: datetime | None = None) -> bool:
        """True until the decision expires."""
        return (now or utcnow()) < self.expires_at

    def to_json(self) -> bytes:
        """The wire form on Kafka and the control plane."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Decision:
        """Parse and validate one decision; raises pydantic.ValidationError on bad input."""
        return cls.model_validate_json(data)

    @classmethod
    def new(
        cls,
        kind: DecisionKind,
        target: Target,
        reason: Reason,
        ttl: timedelta,
        params: dict[str, Any] | None = None,
        mode: Mode = Mode.ENFORCE,
    ) -> Decision:
        """A decision created now that expires after `ttl`."""
        now = utcnow()
        return cls(
            kind=kind, target=target, reason=reason, params=params or {}, mode=mode,
            created_at=now, expires_at=now + ttl,
        )
