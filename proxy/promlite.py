"""prometheus_client without its package `__init__`, for the sidecar's data plane.

`import prometheus_client` runs an `__init__` that imports every exposition helper (http.server,
wsgiref, urllib.request, ...): ~3.5 MB of RSS, while a sidecar uses four metric classes and
`generate_latest`. `install()` registers the package as a module whose names load lazily from the
submodule that defines them (PEP 562); any other name runs the real `__init__` first, so code
using the package sees no difference. Installed only by `proxy.sidecar_main`, before any import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

PACKAGE = "prometheus_client"
# Where the names the proxies use are defined (prometheus_client 0.2x layout).
_SUBMODULES = {
    "CollectorRegistry": "registry", "REGISTRY": "registry",
    "Counter": "metrics", "Gauge": "metrics", "Histogram": "metrics", "Summary": "metrics",
    "generate_latest": "exposition", "CONTENT_TYPE_LATEST": "exposition",
}


def install() -> bool:
    """Make `prometheus_client` lazy; False (and nothing done) when it is already imported or absent."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    package = types.ModuleType(PACKAGE)
    package.__spec__, package.__file__, package.__package__ = spec, spec.origin, PACKAGE
    package.__path__ = list(spec.submodule_search_locations)
    loaded = False

    def lazy(name: str) -> Any:
        nonlocal loaded
        if name in _SUBMODULES:
            value = getattr(importlib.import_module(f"{PACKAGE}.{_SUBMODULES[name]}"), name)
        elif name.startswith("__") or importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            # `from . import values` asks the package first: a submodule is imported, not looked up.
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        elif not loaded:
            loaded = True
            spec.loader.exec_module(package)  # type: ignore[union-attr]  # the real __init__, into this module
            value = getattr(package, name)
        else:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        setattr(package, name, value)
        return value

    package.__getattr__ = lazy  # type: ignore[method-assign]
    sys.modules[PACKAGE] = package
    return True
