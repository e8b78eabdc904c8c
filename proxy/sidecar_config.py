"""The sidecar's YAML config: listeners, the local service, the service registry, TLS, allow-list.

```yaml
service: checkout              # identity of the local service (`--service` overrides)
inbound:  {port: 15006, forward_to: "127.0.0.1:8000", allow: [gateway]}   # allow: omit = any peer
outbound: {port: 15001, limits: {max_inflight: 256, max_connections: 64, retry_after_s: 1}}  # 0 = no limit
admin_port: 15090              # /metrics, /healthz (default GATEWATCH_SIDECAR_ADMIN_PORT; 0 = any free port)
tls: {enabled: true, ca: certs/ca.pem, cert: certs/checkout.pem, key: certs/checkout.key}
services:                      # registry: name -> endpoints (the callee sidecars' inbound ports)
  payment: {endpoints: ["127.0.0.1:15016"], retry: {max_retries: 1}}
breaker: {consecutive_failures: 7}   # defaults for every service; per-service blocks override
retry: {max_retries: 2, deadline_s: 10}
tracing: {enabled: true, sample_ratio: 1.0}
decisions_file: decisions.json      # optional; the control plane (GATEWATCH_CONTROL_PLANE_URL) wins
```
`tls.enabled` must be given explicitly: plain HTTP between sidecars is for local development only.
Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from gatewatch.errors import ConfigError
from gatewatch.settings import Settings
from proxy.admission import AdmissionConfig
from proxy.breaker import BreakerConfig
from proxy.mtls import TlsFiles
from proxy.retry import RetryConfig
from proxy.sidecar_plan import ListenerPlan, ServicePlan, SidecarPlan
from proxy.spiffe import DEFAULT_TRUST_DOMAIN, check_service_name
from proxy.yamlconfig import load_yaml_model

Port = Annotated[int, Field(ge=0, le=65535)]


def _check_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {value!r} must be host:port")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InboundConfig(_Model):
    """The listener other sidecars (and the gateway) call; it forwards to the local service."""

    port: Port = 15006
    forward_to: str
    allow: list[str] | None = None  # caller identities; None = every authenticated caller
    limits: AdmissionConfig = Field(default_factory=AdmissionConfig)  # 503 + Retry-After

    @field_validator("forward_to")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _check_endpoint(value)


class OutboundConfig(_Model):
    """The listener the local service calls others through, naming them in the Host header."""

    port: Port = 15001
    limits: AdmissionConfig = Field(default_factory=AdmissionConfig)  # 503 + Retry-After


class TlsConfig(_Model):
    """mTLS between sidecars; `enabled` is required so plain HTTP is never chosen by accident."""

    enabled: bool
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsConfig:
        if self.enabled and not (self.ca and self.cert and self.key):
            raise ValueError("tls.enabled needs ca, cert and key (see `gatewatch certs init|issue`)")
        return self

    def files(self) -> TlsFiles:
        """The certificate files (only valid when enabled)."""
        assert self.ca and self.cert and self.key
        return TlsFiles(self.ca, self.cert, self.key)


class SidecarTracing(_Model):
    """Span export (OTLP/HTTP to GATEWATCH_OTLP_ENDPOINT); spans name the sidecar's service."""

    enabled: bool = True
    sample_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0


class UpstreamService(_Model):
    """One entry of the registry: where a service's sidecars listen, and optional policy overrides."""

    endpoints: list[str] = Field(min_length=1)
    breaker: dict[str, Any] = Field(default_factory=dict)
    retry: dict[str, Any] = Field(default_factory=dict)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, values: list[str]) -> list[str]:
        return [_check_endpoint(value) for value in values]

    @field_validator("breaker")
    @classmethod
    def _breaker(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(BreakerConfig, overrides)

    @field_validator("retry")
    @classmethod
    def _retry(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(RetryConfig, overrides)


def _check_overrides(kind: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """Each override must be a valid setting on its own (so its error points at its block);
    returns the overrides normalized by validation ("3" -> 3, methods upper-cased)."""
    try:
        validated: Any = TypeAdapter(kind).validate_python(overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}") from None
    return {name: getattr(validated, name) for name in overrides}


class SidecarConfig(_Model):
    """Everything one sidecar needs."""

    service: str
    inbound: InboundConfig
    outbound: OutboundConfig = OutboundConfig()
    admin_port: Port | None = None  # /metrics, /healthz; default GATEWATCH_SIDECAR_ADMIN_PORT (0 = any free port)
    tls: TlsConfig
    services: dict[str, UpstreamService] = Field(default_factory=dict)
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    tracing: SidecarTracing = SidecarTracing()
    decisions_file: Path | None = None  # used when no control plane URL is set (GATEWATCH_CONTROL_PLANE_URL)
    max_body_bytes: int = Field(1 << 20, ge=0)  # requests buffered up to this size can be retried

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return _valid_name(value)

    @field_validator("services")
    @classmethod
    def _names(cls, values: dict[str, UpstreamService]) -> dict[str, UpstreamService]:
        for name in values:
            _valid_name(name)
        return values

    def breaker_for(self, name: str) -> BreakerConfig:
        """The breaker settings of upstream `name`: defaults with its overrides."""
        return dataclasses.replace(self.breaker, **self.services[name].breaker)

    def retry_for(self, name: str) -> RetryConfig:
        """The retry settings of upstream `name`: defaults with its overrides."""
        return dataclasses.replace(self.retry, **self.services[name].retry)

    def plan(self, settings: Settings) -> SidecarPlan:
        """What the data plane runs: this config resolved (per-service policies, the admin port
        default) with the few settings it needs; plain dataclasses, see proxy/sidecar_plan.py."""
        return SidecarPlan(
            service=self.service, host=settings.host,
            inbound=ListenerPlan(self.inbound.port, self.inbound.limits.server_limits()),
            outbound=ListenerPlan(self.outbound.port, self.outbound.limits.server_limits()),
            forward_to=self.inbound.forward_to,
            allow=tuple(self.inbound.allow) if self.inbound.allow is not None else None,
            admin_port=self.admin_port if self.admin_port is not None else settings.sidecar_admin_port,
            tls=self.tls.files() if self.tls.enabled else None, trust_domain=self.tls.trust_domain,
            services={name: ServicePlan(tuple(entry.endpoints), self.breaker_for(name), self.retry_for(name))
                      for name, entry in self.services.items()},
            tracing=self.tracing.enabled, sample_ratio=self.tracing.sample_ratio,
            max_body_bytes=self.max_body_bytes, decisions_file=self.decisions_file,
            collector_endpoint=settings.collector_endpoint, control_plane_url=settings.control_plane_url,
            control_token=settings.control_token.get_secret_value(),
        )


def _valid_name(value: str) -> str:
    try:
        return check_service_name(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def load_sidecar_config(path: Path, service: str | None = None) -> SidecarConfig:
    """Read and validate a sidecar YAML file (errors name file:line: field); `service` (from
    --service) overrides the file's."""

    def prepare(raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw  # validation reports that the file must be a mapping
        if service:
            raw["service"] = service
        _resolve_paths(raw, path.parent)
        return raw

    return load_yaml_model(SidecarConfig, path, prepare=prepare)


def parse_sidecar_config(raw: dict[str, Any], source: str = "sidecar config") -> SidecarConfig:
    """Validate a config mapping; errors become one ConfigError naming the field."""
    try:
        return SidecarConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    if isinstance(raw.get("decisions_file"), str):
        raw["decisions_file"] = str((base / raw["decisions_file"]).resolve())
    tls = raw.get("tls")
    if isinstance(tls, dict):
        for name in ("ca", "cert", "key"):
            if isinstance(tls.get(name), str):
                tls[name] = str((base / tls[name]).resolve())
