"""The decision contract's enumerations, importable without pydantic (the sidecar's data plane
uses them; `gatewatch.decisions` re-exports them with the models)."""

from __future__ import annotations

from enum import StrEnum


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
