"""`gatewatch` subcommands of the collector stage: `gatewatch collector`."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `gatewatch collector`."""
    cmd = subparsers.add_parser(
        "collector", parents=[common], help="OTLP/HTTP + OTLP/gRPC receiver writing spans to the span log"
    )
    cmd.add_argument("--http-port", type=int, default=None, help="OTLP/HTTP port (default 4318; 0 = any free port)")
    cmd.add_argument("--grpc-port", type=int, default=None, help="OTLP/gRPC port (default 4317; 0 = any free port)")
    cmd.add_argument("--max-body-bytes", type=int, default=None, help="request size limit (default 20 MiB)")
    cmd.set_defaults(handler=cmd_collector)


def cmd_collector(args: argparse.Namespace) -> int:
    """Run the collector until SIGINT/SIGTERM, then drain and exit."""
    from collector.service import CollectorService
    from gatewatch.cli import settings_from_args
    from gatewatch.service import run_until_signal

    settings = settings_from_args(
        args,
        collector_http_port=args.http_port,
        collector_grpc_port=args.grpc_port,
        collector_max_body_bytes=args.max_body_bytes,
    )
    service = _AnnouncingCollector(CollectorService(settings))
    run_until_signal([service])
    return 0


class _AnnouncingCollector:
    """Prints the bound endpoints once started, so scripts can find ephemeral ports."""

    name = "collector"

    def __init__(self, service: Any) -> None:
        self._service = service

    def start(self) -> None:
        self._service.start()
        print(f"OTLP/HTTP {self._service.http_endpoint}/v1/traces  OTLP/gRPC {self._service.grpc_endpoint}", flush=True)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._service.stop(timeout_s)
