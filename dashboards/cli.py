"""`gatewatch dashboards render|serve`: the Grafana dashboards, drawn locally from the store."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gatewatch.errors import ConfigError


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `dashboards render` and `dashboards serve`."""
    dashboards = subparsers.add_parser("dashboards", help="dashboards without Grafana").add_subparsers(
        dest="dashboards_command", required=True
    )
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="choose a dashboard variable, e.g. --var route=/api/login (repeatable)")
    render = dashboards.add_parser("render", parents=[common, window], help="write the report as one HTML file")
    render.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="default report.html")
    render.add_argument("--minutes", type=int, default=60, help="time range: the last N minutes (default 60)")
    render.add_argument("--end", help="end of the range, ISO 8601 (default now)")
    render.set_defaults(handler=cmd_render)
    serve = dashboards.add_parser("serve", parents=[common, window], help="serve the report over HTTP")
    serve.add_argument("--port", type=int, default=3001, help="listen port (default 3001)")
    serve.set_defaults(handler=cmd_serve)


def parse_vars(pairs: list[str]) -> dict[str, list[str]]:
    """`NAME=VALUE` pairs as chosen variable values (a name may repeat)."""
    chosen: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--var {pair!r}: use NAME=VALUE")
        chosen.setdefault(name, []).append(value)
    return chosen


def parse_end(text: str | None) -> datetime:
    """The range end: ISO 8601 (naive means UTC), or now."""
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--end {text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_render(args: argparse.Namespace) -> int:
    from dashboards.macros import TimeRange
    from dashboards.report import render_report
    from gatewatch.cli import settings_from_args
    from gatewatch.store import open_store

    if args.minutes < 1:
        raise ConfigError("--minutes must be at least 1")
    settings = settings_from_args(args)
    window = TimeRange.last(timedelta(minutes=args.minutes), parse_end(args.end))
    path = render_report(settings, open_store(settings), args.output, window, parse_vars(args.var))
    print(path)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dashboards.serve import ReportServer
    from gatewatch.cli import settings_from_args
    from gatewatch.service import run_until_signal
    from gatewatch.store import open_store

    settings = settings_from_args(args)
    server = ReportServer(settings, open_store(settings), args.port, parse_vars(args.var))
    run_until_signal([server])
    return 0
