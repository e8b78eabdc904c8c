"""`gatewatch gateway --config gateway.yaml`: run the API gateway until SIGINT/SIGTERM; SIGHUP reloads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the `gateway` subcommand."""
    cmd = subparsers.add_parser("gateway", parents=[common], help="run the API gateway (north-south proxy)")
    cmd.add_argument("--config", type=Path, required=True, help="gateway YAML config")
    cmd.add_argument("--port", type=int, default=None, help="listener port (default GATEWATCH_GATEWAY_PORT)")
    cmd.add_argument("--admin-port", type=int, default=None, help="admin port for /metrics and /healthz")
    cmd.add_argument("--check", action="store_true", help="validate the config and exit")
    cmd.set_defaults(handler=cmd_gateway)


def cmd_gateway(args: argparse.Namespace) -> int:
    import signal

    from gatewatch.cli import settings_from_args
    from gatewatch.service import run_until_signal
    from proxy.gateway import GatewayService
    from proxy.gatewayconfig import load_gateway_config

    config = load_gateway_config(args.config)
    if args.check:
        print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.upstreams)} upstreams)")
        return 0
    extra: dict[str, object] = {}
    if args.port is not None:
        extra["gateway_port"] = args.port
    if args.admin_port is not None:
        extra["gateway_admin_port"] = args.admin_port
    service = GatewayService(args.config, settings_from_args(args, **extra))
    if args.port is not None or args.admin_port is not None:  # flags beat the file's ports
        service.config = service.config.model_copy(update={"listen_port": None, "admin_port": None})
    signal.signal(signal.SIGHUP, lambda *_: service.reload())
    print(f"gateway starting with {args.config}", flush=True)
    run_until_signal([service])
    return 0
