"""`gatewatch` subcommands of the proxy stage."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add this stage's subcommands (none yet)."""
    from proxy import sidecar_cli  # light: handlers import the sidecar lazily

    sidecar_cli.register(subparsers, common)
    from proxy import gateway_cli

    gateway_cli.register(subparsers, common)
