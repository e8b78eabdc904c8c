"""`gatewatch pipeline`: consume the span log into ClickHouse until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the `pipeline` subcommand."""
    cmd = subparsers.add_parser(
        "pipeline", parents=[common], help="consume otlp_spans into ClickHouse otel_traces and rollups"
    )
    cmd.add_argument("--batch-rows", type=int, default=None, help="flush at this many spans (default 50000)")
    cmd.add_argument("--batch-seconds", type=float, default=None, help="...or after this many seconds (default 1)")
    cmd.add_argument("--group", default=None, help="Kafka consumer group (default gatewatch-pipeline)")
    cmd.add_argument("--metrics-port", type=int, default=None, help="/metrics port (default 9464, 0 = any free)")
    cmd.set_defaults(handler=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from gatewatch.cli import settings_from_args
    from gatewatch.service import run_until_signal
    from pipelines.service import PipelineService

    settings = settings_from_args(
        args,
        pipeline_batch_rows=args.batch_rows,
        pipeline_batch_seconds=args.batch_seconds,
        pipeline_group=args.group,
        pipeline_metrics_port=args.metrics_port,
    )
    service = PipelineService(settings)
    return 1 if run_until_signal([service]) else 0
