"""The decision contract's pydantic-free side: its enumerations and a strict parser of the wire
form (`Decision.to_json()`, control-plane snapshots), for proxies whose data plane does not import
pydantic (the sidecar's). `gatewatch.decisions` (the pydantic models) re-exports the enumerations;
`parse_wire_decision` accepts what those models accept from the wire, with the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar


class DecisionKind(StrEnum):
    RATE_LIMIT = "rate_limit"
    BLOCK = "block"
    CIRCUIT_OPEN = "circuit_open"
    CIRCUIT_CLOSE = "circuit_close"
    ROUTE_LIMIT = "route_limit"


class Scope(StrEnum):
    CLIENT = "client"
    ROUTE = "route"
    EDGE = "edge"


class Mode(StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry_run"


E = TypeVar("E", bound=StrEnum)
# The control-plane API (gatewatch.controlplane re-exports these with its pydantic snapshot model).
DECISIONS_PATH = "/v1/decisions"
WATCH_PATH = "/v1/decisions/watch"
ALERTS_PATH = "/v1/alerts"
MAX_WATCH_TIMEOUT_S = 60.0
MAX_KEY_LENGTH = 512  # as gatewatch.decisions.Target.key
_DECISION_FIELDS = {"id", "kind", "target", "params", "reason", "mode", "created_at", "expires_at"}


@dataclass(frozen=True, slots=True)
class WireTarget:
    scope: Scope
    key: str


@dataclass(frozen=True, slots=True)
class WireReason:
    detector: str
    score: float = 0.0
    top_features: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WireDecision:
    """A decision as the proxies use it (same attributes as `gatewatch.decisions.Decision`)."""

    id: str
    kind: DecisionKind
    target: WireTarget
    params: dict[str, Any]
    reason: WireReason
    mode: Mode
    created_at: datetime
    expires_at: datetime


def parse_wire_decision(raw: object) -> WireDecision:
    """One decision from its JSON object; ValueError naming the field when it is malformed."""
    data = _object(raw, "decision", _DECISION_FIELDS, required={"kind", "target", "reason", "expires_at"})
    target = _object(data["target"], "target", {"scope", "key"}, required={"scope", "key"})
    reason = _object(data["reason"], "reason", {"detector", "score", "top_features"}, required={"detector"})
    key = _typed(target["key"], str, "target.key")
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"target.key: length must be 1..{MAX_KEY_LENGTH}")
    features = _typed(reason.get("top_features", {}), dict, "reason.top_features")
    created = _timestamp(data["created_at"], "created_at") if "created_at" in data else datetime.now(UTC)
    expires = _timestamp(data["expires_at"], "expires_at")
    if expires <= created:
        raise ValueError("expires_at must be after created_at")
    return WireDecision(
        id=_typed(data["id"], str, "id") if "id" in data else _new_id(),
        kind=_enum(DecisionKind, data["kind"], "kind"),
        target=WireTarget(_enum(Scope, target["scope"], "target.scope"), key),
        params=_typed(data.get("params", {}), dict, "params"),
        reason=WireReason(_typed(reason["detector"], str, "reason.detector"),
                          _number(reason.get("score", 0.0), "reason.score"),
                          {_typed(k, str, "reason.top_features"): _number(v, f"reason.top_features.{k}")
                           for k, v in features.items()}),
        mode=_enum(Mode, data.get("mode", Mode.ENFORCE.value), "mode"),
        created_at=created, expires_at=expires,
    )


def parse_wire_snapshot(raw: object) -> tuple[int, list[WireDecision]]:
    """A control-plane snapshot `{"version": n, "decisions": [...]}` as (version, decisions)."""
    data = _object(raw, "snapshot", {"version", "decisions"}, required={"version"})
    version = data["version"]
    if type(version) is not int or version < 0:
        raise ValueError("version: must be an integer >= 0")
    decisions = _typed(data.get("decisions", []), list, "decisions")
    return version, [parse_wire_decision(item) for item in decisions]


def _object(raw: object, what: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{what}: must be a JSON object")
    if unknown := raw.keys() - allowed:
        raise ValueError(f"{what}: unknown field {sorted(unknown)[0]!r}")
    if missing := required - raw.keys():
        raise ValueError(f"{what}: missing field {sorted(missing)[0]!r}")
    return raw


def _typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{name}: must be a {kind.__name__}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: must be a number")
    return float(value)


def _enum(kind: type[E], value: Any, name: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}: must be one of {', '.join(member.value for member in kind)}") from None


def _timestamp(value: Any, name: str) -> datetime:
    """RFC 3339 with an offset (as the models require)."""
    try:
        parsed = datetime.fromisoformat(_typed(value, str, name))
    except ValueError:
        raise ValueError(f"{name}: must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: needs a timezone (RFC 3339)")
    return parsed


def _new_id() -> str:
    """A random decision id (uuid4), for a decision that came without one."""
    import uuid  # here, not at the top: ~0.1 MB of a sidecar's RSS for a field the control plane sets

    return str(uuid.uuid4())
