"""What a sidecar's data plane runs: its validated config, resolved, as plain frozen dataclasses.

`SidecarConfig.plan(settings)` (pydantic, in `gatewatch sidecar`) builds it from the YAML and the
`GATEWATCH_*` settings; `to_json` / `from_json` carry it to the data-plane process
(`proxy.sidecar_main`), which never imports pydantic: ~9 MB of RSS per sidecar. Everything here
was validated already; `from_json` only rebuilds (the policy dataclasses re-check their bounds).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.breaker import BreakerConfig
from proxy.mtls import TlsFiles
from proxy.retry import RetryConfig
from proxy.server import ServerLimits


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """One listener: its port (0 = any free one) and its limits (admission control included)."""

    port: int
    limits: ServerLimits


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """One callee of the registry with its effective breaker and retry settings."""

    endpoints: tuple[str, ...]
    breaker: BreakerConfig
    retry: RetryConfig


@dataclass(frozen=True, slots=True)
class SidecarPlan:
    """Everything one sidecar's data plane needs (config + the settings it reads)."""

    service: str
    host: str
    inbound: ListenerPlan
    outbound: ListenerPlan
    forward_to: str
    allow: tuple[str, ...] | None  # None: every authenticated caller
    admin_port: int
    tls: TlsFiles | None  # None: plain HTTP between sidecars
    trust_domain: str
    services: dict[str, ServicePlan]
    tracing: bool
    sample_ratio: float
    max_body_bytes: int
    decisions_file: Path | None
    collector_endpoint: str
    control_plane_url: str
    control_token: str = field(default="", repr=False)  # a secret: never logged

    def to_json(self) -> bytes:
        """The plan as JSON (holds the control-plane token: hand it over a private fd or file only)."""
        return json.dumps(dataclasses.asdict(self), default=_encode).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SidecarPlan:
        """Rebuild a plan written by `to_json`."""
        raw: dict[str, Any] = json.loads(data)
        tls = raw["tls"]
        return cls(**{
            **raw,
            "inbound": _listener(raw["inbound"]), "outbound": _listener(raw["outbound"]),
            "allow": tuple(raw["allow"]) if raw["allow"] is not None else None,
            "tls": TlsFiles(Path(tls["ca"]), Path(tls["cert"]), Path(tls["key"])) if tls else None,
            "services": {name: _service(entry) for name, entry in raw["services"].items()},
            "decisions_file": Path(raw["decisions_file"]) if raw["decisions_file"] else None,
        })


def _encode(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset):
        return sorted(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _listener(raw: dict[str, Any]) -> ListenerPlan:
    return ListenerPlan(raw["port"], ServerLimits(**raw["limits"]))


def _service(raw: dict[str, Any]) -> ServicePlan:
    retry = {**raw["retry"], "methods": frozenset(raw["retry"]["methods"]),
             "statuses": frozenset(raw["retry"]["statuses"])}
    return ServicePlan(tuple(raw["endpoints"]), BreakerConfig(**raw["breaker"]), RetryConfig(**retry))
