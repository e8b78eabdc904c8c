"""One typed settings object, read from `GATEWATCH_*` env vars and overridden by CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from gatewatch.errors import ConfigError

ENV_PREFIX = "GATEWATCH_"


class Settings(BaseModel):
    """Everything a gatewatch process needs to find its neighbours.

    Like pydantic-settings' BaseSettings (keyword arguments > `GATEWATCH_<FIELD>` env vars, any case >
    defaults) with a plain env read: pydantic-settings costs a sidecar ~6.5 MB of RSS at import.
    """

    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_from_env(type(self).model_fields), **values})

    kafka: str = Field("", description="Kafka bootstrap servers; empty = embedded in-process span log")
    clickhouse: str = Field("", description="ClickHouse DSN; empty = chdb://<data_dir>/clickhouse")
    database: str = Field("gatewatch", description="ClickHouse database")
    data_dir: Path = Field(Path(".gatewatch"), description="Where embedded state lives")
    traces_ttl_days: int = Field(0, ge=0, description="otel_traces TTL in days; 0 = keep forever")
    cluster: str = Field("", description="ClickHouse cluster name: Replicated tables + Distributed table")

    host: str = Field("127.0.0.1", description="Address every listener binds to")
    collector_http_port: int = Field(4318, ge=0, le=65535)
    collector_grpc_port: int = Field(4317, ge=0, le=65535)
    collector_max_body_bytes: int = Field(20 << 20, ge=1024, description="OTLP request limit (also after gunzip)")
    collector_max_message_bytes: int = Field(
        1_000_000, ge=1024, description="Largest span-log message; keep under the broker's message.max.bytes"
    )
    collector_retry_after_s: int = Field(5, ge=1, le=300, description="Retry-After sent while the span log is busy")
    pipeline_metrics_port: int = Field(9464, ge=0, le=65535)
    pipeline_batch_rows: int = Field(100_000, ge=1, description="Pipeline flushes a batch at this many spans")
    pipeline_batch_seconds: float = Field(1.0, gt=0, description="...or when its oldest span waited this long")
    pipeline_group: str = Field("gatewatch-pipeline", description="Kafka consumer group shared by pipelines")
    gateway_port: int = Field(8080, ge=0, le=65535)
    gateway_admin_port: int = Field(9901, ge=0, le=65535)
    sidecar_admin_port: int = Field(
        0, ge=0, le=65535, description="Sidecar /metrics and /healthz; 0 = any free port (many sidecars per host)"
    )
    control_plane_port: int = Field(8700, ge=0, le=65535)
    control_plane_url: str = Field("", description="Where proxies fetch decisions; empty = local file")
    control_token: SecretStr = Field(SecretStr(""), description="Bearer token of the control plane")
    otlp_endpoint: str = Field("", description="OTLP/HTTP endpoint proxies export to; empty = collector")

    spans_topic: str = "otlp_spans"
    dlq_topic: str = "otlp_spans.dlq"
    decisions_topic: str = "gatewatch.decisions"

    @field_validator("clickhouse")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return value

    @property
    def clickhouse_dsn(self) -> str:
        """The DSN to open: the configured one, or the embedded chDB store under data_dir."""
        return self.clickhouse or f"chdb://{self.data_dir.resolve() / 'clickhouse'}"

    @property
    def collector_endpoint(self) -> str:
        """OTLP/HTTP base URL that proxies export traces to."""
        return self.otlp_endpoint or f"http://{self.host}:{self.collector_http_port}"


def _from_env(fields: dict[str, Any]) -> dict[str, str]:
    """The `GATEWATCH_*` env vars naming a field (case-insensitive), by field name."""
    found = {}
    for key, value in os.environ.items():
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and (name := upper[len(ENV_PREFIX):].lower()) in fields:
            found[name] = value
    return found


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with CLI overrides (None values are ignored)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(
            f"setting {name} (env GATEWATCH_{name.upper()}): {first['msg']}"
        ) from None
