"""The sidecar's data-plane process: `gatewatch sidecar` validates the YAML and the settings with
pydantic, then `exec`s `python -m proxy.sidecar_main --plan-fd N`, handing the resolved plan over
an inherited file descriptor (never argv: it may hold the control-plane token).

This process imports no pydantic, yaml or settings model (~11 MB of RSS a sidecar would keep for
nothing) and only the parts of prometheus_client it uses (`proxy.promlite`): the engine, the
policies and the plain `SidecarPlan`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from gatewatch.errors import GatewatchError
from proxy.sidecar_plan import SidecarPlan

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as `gatewatch` logs


def read_plan(fd: int) -> SidecarPlan:
    """The plan written to `fd` by `gatewatch sidecar` (the fd is closed after reading)."""
    with os.fdopen(fd, "rb") as source:
        return SidecarPlan.from_json(source.read())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sidecar from a plan until SIGINT/SIGTERM; errors print one line, exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    # Two flags from our own execv: argparse (with gettext and locale) would cost ~0.2 MB of RSS.
    if args[:1] != ["--plan-fd"] or len(args) < 2 or not args[1].isdigit():
        print("usage: python -m proxy.sidecar_main --plan-fd N [--verbose]  (run by `gatewatch sidecar`)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    from proxy import promlite

    promlite.install()  # before anything imports prometheus_client
    from gatewatch.service import run_until_signal
    from proxy.sidecar import SidecarService

    try:
        plan = read_plan(int(args[1]))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        print(f"gatewatch: error: cannot read the sidecar plan from fd {args[1]}: {exc!r}", file=sys.stderr)
        return 2
    try:
        run_until_signal([SidecarService(plan)])
    except GatewatchError as exc:
        print(f"gatewatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
