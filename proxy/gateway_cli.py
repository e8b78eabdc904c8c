"""`gatewatch gateway --config gateway.yaml`: run the API gateway until SIGINT/SIGTERM; SIGHUP reloads.

With `workers: N` (or `--workers N`; `auto` = one per usable core) the gateway runs as N forked
processes on the same ports (`proxy.workers`): rate limits are shared through `proxy.sharedlimits`,
and `/metrics` answers for every worker (prometheus_client's multiprocess mode, in a directory
removed at exit).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewatch.errors import ConfigError, GatewatchError

if TYPE_CHECKING:
    from gatewatch.settings import Settings
    from proxy.gatewayconfig import GatewayConfig
    from proxy.sharedlimits import SharedTatTable


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the `gateway` subcommand."""
    cmd = subparsers.add_parser("gateway", parents=[common], help="run the API gateway (north-south proxy)")
    cmd.add_argument("--config", type=Path, required=True, help="gateway YAML config")
    cmd.add_argument("--port", type=int, default=None, help="listener port (default GATEWATCH_GATEWAY_PORT)")
    cmd.add_argument("--admin-port", type=int, default=None, help="admin port for /metrics and /healthz")
    cmd.add_argument("--workers", default=None, metavar="N|auto",
                     help="processes serving the ports, or auto: one per core (default: the config's, else 1)")
    cmd.add_argument("--check", action="store_true", help="validate the config and exit")
    cmd.set_defaults(handler=cmd_gateway)


def cmd_gateway(args: argparse.Namespace) -> int:
    from gatewatch.cli import settings_from_args
    from proxy.gatewayconfig import load_gateway_config, worker_count

    config = load_gateway_config(args.config)
    workers = worker_count(args.workers if args.workers is not None else config.workers)
    if args.check:
        print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.upstreams)} upstreams, "
              f"{workers} worker{'s' if workers > 1 else ''})")
        return 0
    extra: dict[str, object] = {}
    if args.port is not None:
        extra["gateway_port"] = args.port
    if args.admin_port is not None:
        extra["gateway_admin_port"] = args.admin_port
    settings = settings_from_args(args, **extra)
    flags = args.port is not None or args.admin_port is not None
    if workers == 1:
        return _serve(args.config, settings, flags)
    return _serve_workers(args.config, config, settings, flags, workers)


def _serve(path: Path, settings: Settings, flags_beat_file: bool, worker: int | None = None,
           shared: SharedTatTable | None = None) -> int:
    """Run one gateway process until a signal; 1 if a stage failed."""
    import signal

    from gatewatch.service import run_until_signal
    from proxy.gateway import GatewayService
    from proxy.server import collect_fully_seldom

    collect_fully_seldom()  # this process only proxies
    service = GatewayService(path, settings, worker=worker, shared=shared)
    if flags_beat_file:
        service.config = service.config.model_copy(update={"listen_port": None, "admin_port": None})
    signal.signal(signal.SIGHUP, lambda *_: service.reload())
    if worker is None:
        print(f"gateway starting with {path}", flush=True)
    return 1 if run_until_signal([service]) else 0


def _serve_workers(path: Path, config: GatewayConfig, settings: Settings, flags_beat_file: bool,
                   workers: int) -> int:
    """Fork `workers` gateway processes sharing the ports and the rate limits; supervise them."""
    from proxy.gatewayconfig import listen_ports

    if flags_beat_file:
        config = config.model_copy(update={"listen_port": None, "admin_port": None})
    ports = listen_ports(config, settings)
    if 0 in ports:
        raise ConfigError("with several workers the listener and admin ports must be fixed (not 0)")
    metrics_dir = tempfile.mkdtemp(prefix="gatewatch-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before prometheus_client is imported
    try:
        from prometheus_client import multiprocess

        from proxy.sharedlimits import SharedTatTable
        from proxy.workers import FATAL_EXIT, WorkerPool

        shared = SharedTatTable()
        print(f"gateway starting with {path}: {workers} workers on port {ports[0]}", flush=True)
        def work(index: int) -> int:
            try:
                return _serve(path, settings, flags_beat_file, index, shared)
            except GatewatchError as exc:  # as the CLI reports it: one line, exit 2 (not restarted)
                print(f"gatewatch: error: {exc}", file=sys.stderr)
                return FATAL_EXIT

        pool = WorkerPool(workers, work, on_exit=lambda pid: multiprocess.mark_process_dead(pid, metrics_dir))
        return pool.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
