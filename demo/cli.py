"""`gatewatch demo` (the whole loop with simulated traffic) and `gatewatch up` (the stack, no simulator)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `demo` and `up`."""
    demo = subparsers.add_parser(
        "demo", parents=[common], help="run the whole loop on simulated traffic and print a summary",
        description="Starts collector, pipeline, detectors, control plane, the demo shop behind sidecars and the "
        "gateway, runs a traffic scenario (humans, bots, a fault), and prints what gatewatch did, read from the store.",
    )
    demo.add_argument("--scenario", default="demo", help="scenario name: demo (default), short, calm")
    demo.add_argument("--duration", type=float, default=None, help="traffic seconds (scales every window)")
    demo.add_argument("--report", type=Path, default=None, help="HTML report (default <data dir>/demo/report.html)")
    demo.add_argument("--check", action="store_true", help="exit 1 unless a bot was limited and a circuit opened")
    demo.set_defaults(handler=cmd_demo)

    up = subparsers.add_parser(
        "up", parents=[common], help="run collector, pipeline, detectors and control plane until Ctrl-C",
    )
    up.add_argument("--shop", action="store_true", help="also run the demo shop behind its sidecars and the gateway")
    up.set_defaults(handler=cmd_up)


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from demo.runner import DemoRun, print_summary
    from demo.scenario import get_scenario
    from gatewatch.cli import settings_from_args

    scenario = get_scenario(args.scenario, args.duration)
    if not args.verbose:  # the live panel is the output; per-request client logs would drown it
        quiet_logs()
    console = Console()
    if not console.is_terminal:  # piped or logged: wide enough that the summary tables do not wrap
        console = Console(width=120)
    result = DemoRun(settings_from_args(args), scenario, console, args.report).run()
    print_summary(console, result)
    if args.check and not (result.summary.bots_limited and result.summary.circuits_opened):
        console.print("[red]check failed: the summary shows no limited bot or no opened circuit[/]")
        return 1
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from demo.core import CoreService
    from demo.dataplane import DataPlane
    from demo.runner import demo_settings
    from gatewatch.cli import settings_from_args
    from gatewatch.service import Service, run_until_signal

    settings = demo_settings(settings_from_args(args), ephemeral=False)
    core = CoreService(settings)
    services: list[Service] = [core]
    if args.shop:
        services.append(DataPlane(settings, settings.data_dir / "up", core=core.core))
    return 1 if run_until_signal(services) else 0


def quiet_logs() -> None:
    """Only warnings and errors from the stages while the live panel runs."""
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
