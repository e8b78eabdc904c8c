"""The proxies' request path compiled to C with mypyc, and the switch that loads it.

mypyc compiles these modules as they are (their type hints are the C types) to one extension that
serves a gateway request in ~25% less CPU than the interpreter (README Proxy performance). The build
goes to `proxy/_compiled/` (`python -m proxy.compiled`, run by `make install`). `proxy/__init__`
puts it first on the package's path only when it was built from the current sources for this
interpreter, so an edited module is never shadowed by a stale build; without a build, or with
GATEWATCH_COMPILED=0, the same modules run as plain Python.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import sysconfig
from pathlib import Path

from gatewatch.errors import GatewatchError

log = logging.getLogger(__name__)

# The request path of both proxies. Left out: what mypyc cannot compile (async generators: see
# proxy/bodies.py), what pydantic reads at run time (config, admission, the breaker's and retry's
# dataclasses), and the rest (startup, admin, control plane), where the time is not spent. A class
# that subclasses a compiled class must be compiled too (mypyc forbids interpreted subclasses).
COMPILED_MODULES = (
    "auth", "circuit", "deadlines", "endpoints", "flow", "gatewaypolicies", "headers", "identity", "metrics",
    "otlpwire", "policy", "ratelimit", "retrying", "routing", "server", "sharedlimits", "sidecar_metrics",
    "sidecar_routing", "sidecar_tracing", "spans", "tracing", "upstream",
)
PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR / "_compiled"
STAMP = BUILD_DIR / "stamp"
DISABLE_ENV = "GATEWATCH_COMPILED"
# The extension every compiled module's stub loads its code from (a module of this package).
GROUP = "proxy._compiled_group"


def source_digest() -> str:
    """What a build must have been made from: this interpreter's ABI and the modules' sources."""
    digest = hashlib.sha256(f"{sys.implementation.cache_tag} {sysconfig.get_platform()}".encode())
    for name in COMPILED_MODULES:
        digest.update(name.encode() + b"\0" + (PACKAGE_DIR / f"{name}.py").read_bytes())
    return digest.hexdigest()


def package_path(path: list[str]) -> list[str]:
    """The proxy package's `__path__`: the compiled build first when it matches the sources."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return path
    try:
        built_from = STAMP.read_text().strip()
    except OSError:
        return path  # never built: plain Python
    if built_from != source_digest():
        log.warning("proxy/_compiled was built from other sources: plain Python until "
                    "`gatewatch dev compile` (make install) rebuilds it")
        return path
    return [str(BUILD_DIR / "proxy"), *path]


def is_compiled(module: object) -> bool:
    """True when `module` was loaded from the compiled build."""
    return str(getattr(module, "__file__", "")).endswith(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def build() -> bool:
    """Compile COMPILED_MODULES into BUILD_DIR; False when it was already built from these sources.

    Raises GatewatchError when mypy or the C compiler fails (a partial build is removed).
    """
    import shutil  # here, not at the top: the sidecar's data plane imports this module

    digest = source_digest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return False
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    try:
        _compile()
    except (Exception, SystemExit) as exc:  # mypyc exits on type errors; the compiler raises
        shutil.rmtree(BUILD_DIR, ignore_errors=True)
        raise GatewatchError(
            f"compiling the proxies with mypyc failed ({exc or 'see the messages above'}); "
            f"{DISABLE_ENV}=0 skips the build and runs plain Python"
        ) from None
    STAMP.write_text(digest + "\n")
    return True


def _compile() -> None:
    import tempfile

    from mypyc.build import mypycify  # a dev dependency: only building needs mypy
    from setuptools import Distribution

    with tempfile.TemporaryDirectory(prefix="gatewatch-mypyc-") as scratch:
        extensions = mypycify(
            [str(PACKAGE_DIR / f"{name}.py") for name in COMPILED_MODULES],
            group_name=GROUP, target_dir=str(Path(scratch) / "c"),
        )
        # A bare Distribution: setup() would read (and re-validate) the project's pyproject.toml.
        distribution = Distribution({"name": "gatewatch-compiled", "ext_modules": extensions})
        command = distribution.get_command_obj("build_ext")
        command.build_lib = str(BUILD_DIR)
        command.build_temp = str(Path(scratch) / "o")
        distribution.run_command("build_ext")
