"""Store access: every read and write goes through one clickhouse-connect client factory.

Queries name the database explicitly (`gatewatch.otel_traces`), so one client serves any database
and the same SQL runs on chDB and on a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

from gatewatch.errors import ConfigError, GatewatchError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from gatewatch.settings import Settings


def check_dsn(dsn: str) -> str:
    """Return the DSN if it is usable, else raise ConfigError saying how to fix it."""
    parsed = urlparse(dsn)
    if parsed.scheme == "chdb":
        location = parsed.netloc or parsed.path
        if not location:
            raise ConfigError(f"ClickHouse DSN {dsn!r} names no location: use chdb:///abs/path or chdb://memory")
        return dsn
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise ConfigError(f"ClickHouse DSN {dsn!r} has no host: use http://host:8123/database")
        try:
            parsed.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(f"ClickHouse DSN {dsn!r} has an invalid port") from None
        return dsn
    raise ConfigError(
        f"ClickHouse DSN {dsn!r} has an unknown scheme: use chdb:///path (embedded) or http://host:8123/db"
    )


def connect(dsn: str) -> Client:
    """A clickhouse-connect client for a chdb:// or http(s):// DSN, or a GatewatchError."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

    check_dsn(dsn)
    try:
        if dsn.startswith("chdb:"):
            client = clickhouse_connect.get_client(dsn=dsn)
        else:
            client = clickhouse_connect.get_client(dsn=dsn, connect_timeout=5, send_receive_timeout=60)
    except (ClickHouseClientError, OSError) as exc:
        raise GatewatchError(f"cannot open the ClickHouse store at {redact(dsn)}: {first_line(exc)}") from None
    return client


def open_store(settings: Settings) -> Client:
    """The store client for these settings (embedded chDB by default)."""
    if settings.clickhouse_dsn.startswith("chdb://") and not settings.clickhouse:
        (settings.data_dir / "clickhouse").mkdir(parents=True, exist_ok=True)
    return connect(settings.clickhouse_dsn)


def redact(dsn: str) -> str:
    """The DSN with any password removed, safe to log."""
    parsed = urlparse(dsn)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return dsn


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
