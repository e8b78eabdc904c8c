"""Foundation subcommands: `db migrate|status`, `dev kafka start|stop|status`, `dev compile`, `status`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gatewatch.settings import Settings


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the foundation's subcommands."""
    db = subparsers.add_parser("db", help="ClickHouse schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", parents=[common], help="create or upgrade the schema").set_defaults(
        handler=cmd_db_migrate
    )
    db.add_parser("status", parents=[common], help="list migrations and their state").set_defaults(
        handler=cmd_db_status
    )

    dev = subparsers.add_parser("dev", help="development services").add_subparsers(dest="dev_command", required=True)
    kafka = dev.add_parser("kafka", help="a local single-node Kafka broker").add_subparsers(
        dest="kafka_command", required=True
    )
    for name, handler in (("start", cmd_kafka_start), ("stop", cmd_kafka_stop), ("status", cmd_kafka_status)):
        cmd = kafka.add_parser(name, parents=[common])
        cmd.add_argument("--state-dir", type=Path, default=None, help="default <data dir>/kafka")
        if name == "start":
            cmd.add_argument("--port", type=int, default=0, help="listener port (default: a free one)")
        cmd.set_defaults(handler=handler)
    dev.add_parser("compile", help="compile the proxies' request path with mypyc (make install runs it)").set_defaults(
        handler=cmd_compile
    )

    subparsers.add_parser("status", parents=[common], help="health of the store and the span log").set_defaults(
        handler=cmd_status
    )


def _settings(args: argparse.Namespace) -> Settings:
    from gatewatch.cli import settings_from_args

    return settings_from_args(args)


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from gatewatch.store import open_store, redact
    from pipelines.migrate import migrate

    settings = _settings(args)
    applied = migrate(open_store(settings), settings)
    where = f"{redact(settings.clickhouse_dsn)} database {settings.database}"
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print(f"schema up to date ({where})")
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    from gatewatch.store import open_store
    from pipelines.migrate import status

    settings = _settings(args)
    for entry in status(open_store(settings), settings):
        print(f"{entry.version:04d}_{entry.name}: {'applied' if entry.applied else 'pending'}")
    return 0


def _kafka_state(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or _settings(args).data_dir / "kafka")


def cmd_kafka_start(args: argparse.Namespace) -> int:
    from gatewatch import devkafka

    broker = devkafka.start(_kafka_state(args), port=args.port)
    print(broker.bootstrap)
    return 0


def cmd_kafka_stop(args: argparse.Namespace) -> int:
    from gatewatch import devkafka

    stopped = devkafka.stop(_kafka_state(args))
    print("stopped" if stopped else "not running")
    return 0


def cmd_kafka_status(args: argparse.Namespace) -> int:
    from gatewatch import devkafka

    broker = devkafka.status(_kafka_state(args))
    print(f"running at {broker.bootstrap} (pid {broker.pid})" if broker else "not running")
    return 0 if broker else 1


def cmd_status(args: argparse.Namespace) -> int:
    from gatewatch.health import stack_health

    healthy = True
    for check in stack_health(_settings(args)):
        healthy &= check.ok
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    return 0 if healthy else 1


def cmd_compile(args: argparse.Namespace) -> int:
    import os

    from proxy import compiled

    if os.environ.get(compiled.DISABLE_ENV) == "0":
        print(f"{compiled.DISABLE_ENV}=0: not compiling; the proxies run as plain Python")
    elif compiled.build():
        print(f"compiled {len(compiled.COMPILED_MODULES)} proxy modules into {compiled.BUILD_DIR}")
    else:
        print(f"{compiled.BUILD_DIR} is up to date")
    return 0
