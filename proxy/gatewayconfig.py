"""The gateway's YAML config: listeners, upstreams, auth providers, rate limits and routes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gatewatch.errors import ConfigError
from gatewatch.semconv import GATEWAY_SERVICE
from proxy.admission import AdmissionConfig
from proxy.yamlconfig import Loc, load_yaml_model

if TYPE_CHECKING:
    from gatewatch.settings import Settings


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsConfig(AdmissionConfig, _Model):
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=0)
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)
    drain_timeout_s: float = Field(10.0, ge=0)


class UpstreamTlsConfig(_Model):
    """mTLS to an upstream (e.g. a sidecar's inbound port): the CA to trust, the gateway's own
    certificate, and the identity the upstream must present (a DNS SAN; default the upstream name)."""

    ca: Path
    cert: Path
    key: Path
    server_name: str | None = Field(None, description="expected service identity; default: the upstream's name")

    def resolved(self, base: Path) -> UpstreamTlsConfig:
        """The same settings with relative paths taken from `base` (the config file's directory)."""
        return self.model_copy(update={name: base / getattr(self, name) for name in ("ca", "cert", "key")})


class KeepaliveConfig(_Model):
    """The pool of idle upstream connections (as Kong's `upstream_keepalive_*` settings)."""

    max_idle_per_endpoint: int = Field(1024, ge=0, description="idle connections kept per upstream endpoint")
    idle_timeout_s: float = Field(60.0, gt=0, description="an idle connection is closed after this")


class UpstreamConfig(_Model):
    endpoints: list[str] = Field(min_length=1)
    max_failures: int = Field(3, ge=1)
    eject_s: float = Field(10.0, ge=0)
    connect_timeout_s: float = Field(2.0, gt=0)
    tls: UpstreamTlsConfig | None = None

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            host, _, port = endpoint.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"endpoint {endpoint!r} must be host:port")
        return endpoints


class JwtProviderConfig(_Model):
    type: Literal["jwt"]
    jwks_file: Path | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = Field(30.0, ge=0)
    jwks_cache_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> JwtProviderConfig:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of jwks_file and jwks_url")
        return self


class IntrospectionProviderConfig(_Model):
    type: Literal["introspection"]
    url: str
    client_id: str = ""
    client_secret_env: str = Field("", description="env var holding the client secret (never in the file)")
    cache_s: float = Field(30.0, ge=0)
    timeout_s: float = Field(2.0, gt=0)


class ApiKeyProviderConfig(_Model):
    type: Literal["api_key"]
    header: str = "x-api-key"
    keys: dict[str, str] = Field(min_length=1, description="key id -> SHA-256 hex of the key")

    @field_validator("keys")
    @classmethod
    def _hex(cls, keys: dict[str, str]) -> dict[str, str]:
        for name, digest in keys.items():
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError(f"key {name!r}: expected the SHA-256 hex digest of the key (64 hex digits)")
        return {name: digest.lower() for name, digest in keys.items()}


AuthProviderConfig = Annotated[
    JwtProviderConfig | IntrospectionProviderConfig | ApiKeyProviderConfig, Field(discriminator="type")
]


class RateLimitConfig(_Model):
    rate_per_s: float = Field(gt=0)
    burst: int = Field(1, ge=1)
    key: Literal["client", "subject", "api_key"] = "client"


class MatchConfig(_Model):
    prefix: str | None = None
    path: str | None = None
    pattern: str | None = Field(None, description="path template such as /users/{id}/orders")
    methods: list[str] = Field(default_factory=list)
    host: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> MatchConfig:
        given = [v for v in (self.prefix, self.path, self.pattern) if v is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of prefix, path and pattern")
        if not given[0].startswith("/"):
            raise ValueError("paths must start with /")
        self.methods = [method.upper() for method in self.methods]
        return self


class RouteAuthConfig(_Model):
    provider: str
    scopes: list[str] = Field(default_factory=list)


class RouteConfig(_Model):
    name: str
    match: MatchConfig
    upstream: str
    timeout_s: float = Field(15.0, gt=0)
    max_body_bytes: int | None = Field(None, ge=0)
    auth: RouteAuthConfig | None = None
    rate_limit: str | RateLimitConfig | None = None
    route_limit: RateLimitConfig | None = Field(None, description="one bucket shared by every client")
    strip_prefix: bool = False


class TracingConfig(_Model):
    enabled: bool = True
    sample_ratio: float = Field(1.0, ge=0, le=1)
    service_name: str = GATEWAY_SERVICE


class GatewayConfig(_Model):
    listen_port: int | None = Field(None, ge=0, le=65535, description="default: GATEWATCH_GATEWAY_PORT")
    admin_port: int | None = Field(None, ge=0, le=65535, description="default: GATEWATCH_GATEWAY_ADMIN_PORT")
    workers: int | Literal["auto"] = Field(
        1, description="processes sharing the ports (SO_REUSEPORT), or auto: one per usable core; read at start")
    subject_header: str = "x-gatewatch-subject"
    decisions_file: Path | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    upstream_keepalive: KeepaliveConfig = Field(default_factory=KeepaliveConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    upstreams: dict[str, UpstreamConfig] = Field(min_length=1)
    auth: dict[str, AuthProviderConfig] = Field(default_factory=dict)
    rate_limits: dict[str, RateLimitConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(min_length=1)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if value == "auto" or (type(value) is int and 1 <= value <= 64):
            return value
        raise ValueError(f"must be a number within 1..64 or auto (got {value!r})")


def worker_count(workers: int | str) -> int:
    """`workers` as a number of processes: `auto` is one per core this process may run on (as nginx's
    `worker_processes auto`), at most 64; anything else must be an int within 1..64."""
    if workers == "auto":
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(64, usable))
    if isinstance(workers, str):
        try:
            workers = int(workers)
        except ValueError:
            raise ConfigError(f"workers must be a number within 1..64 or auto (got {workers!r})") from None
    if not 1 <= workers <= 64:
        raise ConfigError(f"workers must be within 1..64 or auto (got {workers})")
    return workers


def listen_ports(config: GatewayConfig, settings: Settings) -> tuple[int, int]:
    """The listener and admin ports: the config's, else the settings' (`GATEWATCH_GATEWAY_*`)."""
    port = config.listen_port if config.listen_port is not None else settings.gateway_port
    admin_port = config.admin_port if config.admin_port is not None else settings.gateway_admin_port
    return port, admin_port


def check_references(config: GatewayConfig) -> list[tuple[Loc, str]]:
    """Names a route uses must be defined: upstreams, auth providers, named rate limits."""
    problems: list[tuple[Loc, str]] = []
    for i, route in enumerate(config.routes):
        if route.upstream not in config.upstreams:
            problems.append((("routes", i, "upstream"), f"unknown upstream {route.upstream!r}"))
        if route.auth is not None and route.auth.provider not in config.auth:
            problems.append((("routes", i, "auth", "provider"), f"unknown auth provider {route.auth.provider!r}"))
        if isinstance(route.rate_limit, str) and route.rate_limit not in config.rate_limits:
            problems.append((("routes", i, "rate_limit"), f"unknown rate limit {route.rate_limit!r}"))
    return problems


def load_gateway_config(path: Path, text: str | None = None) -> GatewayConfig:
    """Parse and validate a gateway config file (ConfigError naming file and line on problems)."""
    config = load_yaml_model(GatewayConfig, path, text, check=_check)
    if config.decisions_file is not None and not config.decisions_file.is_absolute():
        config.decisions_file = path.parent / config.decisions_file
    for provider in config.auth.values():
        if isinstance(provider, JwtProviderConfig) and provider.jwks_file and not provider.jwks_file.is_absolute():
            provider.jwks_file = path.parent / provider.jwks_file
    for upstream in config.upstreams.values():
        if upstream.tls is not None:
            upstream.tls = upstream.tls.resolved(path.parent)
    return config


def _check(config: Any) -> list[tuple[Loc, str]]:
    return check_references(config)
