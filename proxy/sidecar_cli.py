"""Sidecar subcommands: `gatewatch certs init|issue` and `gatewatch sidecar` (registered by proxy/cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `certs` and `sidecar`."""
    certs = subparsers.add_parser("certs", help="local CA and service certificates for sidecar mTLS")
    actions = certs.add_subparsers(dest="certs_command", required=True)
    init = actions.add_parser("init", parents=[common], help="create the local CA")
    init.add_argument("--dir", type=Path, default=None, help="where certificates live (default <data dir>/certs)")
    init.add_argument("--trust-domain", default=None, help="SPIFFE trust domain (default gatewatch.local)")
    init.add_argument("--days", type=int, default=3650, help="CA validity in days")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=cmd_certs_init)
    issue = actions.add_parser("issue", parents=[common], help="issue a certificate for one service")
    issue.add_argument("service", help="service name; the identity becomes spiffe://<trust domain>/<service>")
    issue.add_argument("--dir", type=Path, default=None, help="where the CA lives (default <data dir>/certs)")
    issue.add_argument("--out", type=Path, default=None, help="where to write <service>.pem/.key (default --dir)")
    issue.add_argument("--days", type=int, default=365, help="validity in days")
    issue.set_defaults(handler=cmd_certs_issue)

    sidecar = subparsers.add_parser("sidecar", parents=[common], help="run a sidecar proxy beside one service")
    sidecar.add_argument("--service", required=True, help="the name (identity) of the service this sidecar serves")
    sidecar.add_argument("--config", type=Path, required=True, help="sidecar YAML (listeners, registry, TLS)")
    sidecar.set_defaults(handler=cmd_sidecar)


def _certs_dir(args: argparse.Namespace) -> Path:
    from gatewatch.cli import settings_from_args

    return Path(args.dir) if args.dir else settings_from_args(args).data_dir / "certs"


def cmd_certs_init(args: argparse.Namespace) -> int:
    from gatewatch.errors import ConfigError
    from proxy import certs

    if args.days < 1:
        raise ConfigError("--days must be at least 1")
    paths = certs.init_ca(_certs_dir(args), args.trust_domain or certs.DEFAULT_TRUST_DOMAIN, args.days, args.force)
    print(f"CA certificate {paths.cert}\nCA key {paths.key} (mode 0600)")
    return 0


def cmd_certs_issue(args: argparse.Namespace) -> int:
    from gatewatch.errors import ConfigError
    from proxy import certs

    if args.days < 1:
        raise ConfigError("--days must be at least 1")
    paths = certs.issue(_certs_dir(args), args.service, args.days, out_dir=args.out)
    print(f"certificate {paths.cert}\nkey {paths.key} (mode 0600)")
    return 0


def cmd_sidecar(args: argparse.Namespace) -> int:
    import os
    import sys

    from gatewatch.cli import settings_from_args
    from proxy.compiled import DISABLE_ENV
    from proxy.sidecar_config import load_sidecar_config

    settings = settings_from_args(args)
    config = load_sidecar_config(args.config, service=args.service)  # errors: one line, exit 2
    # The data plane runs in a fresh interpreter without pydantic (proxy/sidecar_main.py); the
    # plan goes over an inherited fd, not argv, since it may hold the control-plane token.
    fd = plan_fd(config.plan(settings).to_json())
    argv = [sys.executable, "-m", "proxy.sidecar_main", "--plan-fd", str(fd)]
    # Plain Python unless asked otherwise: the compiled request path (proxy/compiled.py) costs a
    # sidecar ~2 MB of its 30 MB RSS budget, and its latency targets are met without it.
    env = {**os.environ, DISABLE_ENV: os.environ.get(DISABLE_ENV, "0")}
    os.execve(sys.executable, argv + (["--verbose"] if args.verbose else []), env)  # noqa: S606  # our own interpreter, fixed argv
    return 0  # not reached


def plan_fd(data: bytes) -> int:
    """An inheritable fd to read `data` from: an anonymous memory file (no path, no size limit),
    or a pipe where memfd is missing (plans are a few KB, under the pipe buffer)."""
    import os

    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("gatewatch-sidecar-plan", 0)  # no MFD_CLOEXEC: the exec'd process reads it
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    os.set_inheritable(read_end, True)
    return read_end
