"""The proxies' request path compiled to C with mypyc, and the switch that loads it.

mypyc compiles these modules as they are (their type hints are the C types) to one extension that
serves a gateway request in ~25% less CPU than the interpreter (README Proxy performance). The build
goes to `proxy/_compiled/` (`gatewatch dev compile`, run by `make install`). `proxy/__init__`
puts it first on the package's path only when it was built from the current sources for this
interpreter, so an edited module is never shadowed by a stale build; without a build, or with
GATEWATCH_COMPILED=0, the same modules run as plain Python.

Module-level constants in these modules are `Final`, and so are the functions the request path
calls from other modules (`_monotonic: Final = time.monotonic`): compiled, a `Final` name is a C
static, where any other global is a dict lookup at every use and `time.monotonic()` an attribute
lookup too (together ~6% of a gateway request's instructions, counted with callgrind).
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES

# Only os at import: every proxy process imports this module first, and the sidecar's data
# plane counts its RSS (hashlib alone, with OpenSSL's libcrypto, was 0.8 MB of it).

# The request path of both proxies. Left out: what mypyc cannot compile (async generators: see
# proxy/bodies.py), what pydantic reads at run time (config, admission, the breaker's and retry's
# dataclasses), and the rest (startup, admin, control plane), where the time is not spent. A class
# that subclasses a compiled class must be compiled too (mypyc forbids interpreted subclasses).
COMPILED_MODULES = (
    "auth", "circuit", "deadlines", "decisionstore", "endpoints", "flow", "gatewaypolicies", "headers", "identity",
    "memo", "metrics", "otlpwire", "policy", "ratelimit", "retrying", "routing", "server", "sharedlimits",
    "sidecar_metrics", "sidecar_routing", "sidecar_tracing", "spans", "tracing", "upstream",
)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.path.join(PACKAGE_DIR, "_compiled")
DISABLE_ENV = "GATEWATCH_COMPILED"
# The extension every compiled module's stub loads its code from (a module of this package).
GROUP = "proxy._compiled_group"
# This interpreter's extension suffix (ABI and platform: ".cpython-311-x86_64-linux-gnu.so").
_SUFFIX = EXTENSION_SUFFIXES[0]


def stamp_path() -> str:
    """The file that holds the digest of the sources the build was made from."""
    return os.path.join(BUILD_DIR, "stamp")


def source_digest() -> str:
    """What a build must have been made from: this interpreter's ABI and the modules' sources."""
    import hashlib

    digest = hashlib.sha256(_SUFFIX.encode())
    for name in COMPILED_MODULES:
        with open(os.path.join(PACKAGE_DIR, f"{name}.py"), "rb") as source:
            digest.update(name.encode() + b"\0" + source.read())
    return digest.hexdigest()


def built_from() -> str | None:
    """The digest in the build's stamp; None when there is no build."""
    try:
        with open(stamp_path()) as stamp:
            return stamp.read().strip()
    except OSError:
        return None


def package_path(path: list[str]) -> list[str]:
    """The proxy package's `__path__`: the compiled build first when it matches the sources."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return path
    digest = built_from()
    if digest is None:
        return path  # never built: plain Python
    if digest != source_digest():
        import logging

        logging.getLogger(__name__).warning(
            "proxy/_compiled was built from other sources: plain Python until "
            "`gatewatch dev compile` (make install) rebuilds it")
        return path
    return [os.path.join(BUILD_DIR, "proxy"), *path]


def is_compiled(module: object) -> bool:
    """True when `module` was loaded from the compiled build."""
    return str(getattr(module, "__file__", "")).endswith(_SUFFIX)


def build() -> bool:
    """Compile COMPILED_MODULES into BUILD_DIR; False when it was already built from these sources.

    Raises GatewatchError when mypy or the C compiler fails (a partial build is removed).
    """
    import shutil

    from gatewatch.errors import GatewatchError

    digest = source_digest()
    if built_from() == digest:
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
    with open(stamp_path(), "w") as stamp:
        stamp.write(digest + "\n")
    return True


def _compile() -> None:
    import tempfile

    from mypyc.build import mypycify  # a dev dependency: only building needs mypy
    from setuptools import Distribution

    with tempfile.TemporaryDirectory(prefix="gatewatch-mypyc-") as scratch:
        extensions = mypycify(
            [os.path.join(PACKAGE_DIR, f"{name}.py") for name in COMPILED_MODULES],
            group_name=GROUP, target_dir=os.path.join(scratch, "c"),
        )
        # A bare Distribution: setup() would read (and re-validate) the project's pyproject.toml.
        distribution = Distribution({"name": "gatewatch-compiled", "ext_modules": extensions})
        command = distribution.get_command_obj("build_ext")
        command.build_lib = BUILD_DIR
        command.build_temp = os.path.join(scratch, "o")
        distribution.run_command("build_ext")
