"""`gatewatch` subcommands of the detectors stage: `detectors train|run`, `detect series|sessions`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `detectors train|run` and `detect series|sessions`."""
    det = subparsers.add_parser("detectors", help="bot and failure-spike detectors").add_subparsers(
        dest="detectors_command", required=True)
    train = det.add_parser("train", parents=[common], help="fit the bot model on stored traffic and ground_truth")
    train.add_argument("--hours", type=float, default=1.0, help="training span ending now (default 1)")
    train.set_defaults(handler=cmd_train)
    run = det.add_parser("run", parents=[common], help="the live loop plus the control plane")
    run.add_argument("--no-control-plane", action="store_true", help="run the detectors only")
    run.set_defaults(handler=cmd_run)

    ev = det.add_parser("eval", parents=[common], help="precision/recall/delay report (simulated + public data)")
    ev.add_argument("--datasets", type=Path, default=Path(".gatewatch/datasets"),
                    help="folder holding the aeon wheel (make eval downloads it)")
    ev.add_argument("-o", "--output", type=Path, default=Path("bench/results/detectors-eval"),
                    help="report path without suffix (.md and .json are written)")
    ev.set_defaults(handler=cmd_eval)

    detect = subparsers.add_parser("detect", help="score existing logs offline").add_subparsers(
        dest="detect_command", required=True)
    series = detect.add_parser("series", parents=[common], help="timestamp,value CSV -> score, is_anomaly")
    series.add_argument("input", type=Path)
    series.add_argument("-o", "--output", type=Path, required=True)
    series.add_argument("--threshold", type=float, default=0.5)
    series.add_argument("--window", type=int, default=2000, help="trailing rows the robust baseline uses")
    series.set_defaults(handler=cmd_series)
    sessions = detect.add_parser("sessions", parents=[common], help="access log -> one row per client")
    sessions.add_argument("input", type=Path)
    sessions.add_argument("-o", "--output", type=Path, required=True)
    sessions.add_argument("--format", choices=("csv", "combined"), default="csv")
    sessions.add_argument("--client-field", choices=("address", "ident", "user"), default="address",
                          help="combined logs: which field names the client")
    sessions.add_argument("--model", type=Path, help="model directory (default <data dir>/models if it has one)")
    sessions.set_defaults(handler=cmd_sessions)


def cmd_train(args: argparse.Namespace) -> int:
    from detectors import registry
    from detectors.config import DetectorConfig
    from detectors.train import train
    from gatewatch.cli import settings_from_args
    from gatewatch.store import open_store

    settings = settings_from_args(args)
    config = DetectorConfig()
    model = train(open_store(settings), settings.database, config, hours=args.hours)
    path = registry.save(model, config.models_path(settings.data_dir))
    print(f"saved {path}: {model.metadata['samples']} samples, {model.metadata['positives']} bot samples, "
          f"held-out {model.metadata['held_out_metrics'] or 'n/a (no labels)'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from detectors.evaluate import evaluate
    from gatewatch.cli import settings_from_args
    from gatewatch.store import open_store

    settings = settings_from_args(args)
    wheels = sorted(args.datasets.glob("aeon-*.whl")) if args.datasets.is_dir() else []
    evaluate(open_store(settings), settings, wheels[-1] if wheels else None, args.output)
    print(args.output.with_suffix(".md").read_text())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from detectors.controlplane import ControlPlaneService
    from detectors.service import DetectorService
    from gatewatch.cli import settings_from_args
    from gatewatch.service import Service, run_until_signal
    from gatewatch.store import open_store

    settings = settings_from_args(args)
    store = open_store(settings)
    services: list[Service] = [DetectorService(settings, store=store)]
    if not args.no_control_plane:
        services.append(ControlPlaneService(settings, store=store))
    return 1 if run_until_signal(services) else 0


def cmd_series(args: argparse.Namespace) -> int:
    from detectors.series import detect_series, read_series

    out = detect_series(read_series(args.input), args.threshold, args.window)
    out.to_csv(args.output, index=False)
    print(f"{len(out)} rows, {int(out['is_anomaly'].sum())} anomalous -> {args.output}")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    from detectors import registry
    from detectors.config import DetectorConfig
    from detectors.sessions import read_combined, read_csv, score_sessions, write_verdicts
    from gatewatch.cli import settings_from_args

    config = DetectorConfig()
    rows = read_combined(args.input, args.client_field) if args.format == "combined" else read_csv(args.input)
    model_dir = args.model or config.models_path(settings_from_args(args).data_dir)
    model = registry.load_latest(model_dir)
    verdicts = score_sessions(rows, model, config.bot_threshold, config.client_window_s, config.interval_s,
                              config.min_client_requests)
    write_verdicts(verdicts, args.output)
    print(f"{len(verdicts)} clients, {sum(v.is_bot for v in verdicts)} flagged as bots -> {args.output}")
    return 0
