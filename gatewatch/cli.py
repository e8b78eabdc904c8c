"""The `gatewatch` command line: each stage registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from gatewatch.errors import GatewatchError
from gatewatch.settings import Settings, load_settings

# Each module exposes `register(subparsers, common)`; keep them light to import (heavy imports
# belong inside the handlers) so `gatewatch --help` stays fast.
STAGE_CLIS = (
    "gatewatch.basecli",
    "collector.cli",
    "pipelines.cli",
    "proxy.cli",
    "detectors.cli",
    "demo.cli",
    "dashboards.cli",
)


def common_options() -> argparse.ArgumentParser:
    """Flags every subcommand accepts; they override the GATEWATCH_* environment."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common settings (override GATEWATCH_* env vars)")
    group.add_argument("--kafka", help="Kafka bootstrap servers; empty = embedded span log")
    group.add_argument("--clickhouse", help="ClickHouse DSN: chdb:///path or http://host:8123/db")
    group.add_argument("--database", help="ClickHouse database (default gatewatch)")
    group.add_argument("--data-dir", dest="data_dir", help="where embedded state lives (default .gatewatch)")
    group.add_argument("--host", help="address listeners bind to (default 127.0.0.1)")
    group.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return common


def settings_from_args(args: argparse.Namespace, **extra: object) -> Settings:
    """The settings object for a parsed command line."""
    values = {
        name: getattr(args, name, None)
        for name in ("kafka", "clickhouse", "database", "data_dir", "host")
    }
    values.update(extra)
    return load_settings(**values)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every stage's subcommands."""
    parser = argparse.ArgumentParser(
        prog="gatewatch",
        description="Observability and anomaly detection for microservice traffic.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for module in STAGE_CLIS:
        importlib.import_module(module).register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; errors become one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "verbose", False):
        # kafka-python logs every reconnect attempt at INFO/ERROR; our own errors say it once.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        return int(args.handler(args) or 0)
    except GatewatchError as exc:
        print(f"gatewatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
