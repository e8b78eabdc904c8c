"""The demo's proxy configs: one sidecar per shop service, and the gateway's routes in front.

Pure functions from ports to configs (the same dicts are written as YAML beside the demo's data,
so a user can read exactly what ran). Sidecars start leaves-first: a caller's registry needs the
callee sidecars' bound inbound ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from demo.services import EDGES, JWT_AUDIENCE, JWT_ISSUER, SERVICES
from gatewatch.semconv import GATEWAY_SERVICE

# Services the gateway routes to (the others are only called by services).
EDGE_SERVICES = ("storefront", "catalog", "checkout", "auth")
# Per-client limit every route has anyway: far above a human's pace, so bots are slowed by decisions.
BASELINE_LIMIT = {"rate_per_s": 40.0, "burst": 80}


def callees(service: str) -> list[str]:
    """The services `service` calls."""
    return [b for a, b in EDGES if a == service]


def start_order() -> list[str]:
    """Services ordered so every callee comes before its callers (leaves first)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for callee in callees(name):
                visit(callee)
            order.append(name)

    for name in SERVICES:
        visit(name)
    return order


def sidecar_config(
    service: str, service_port: int, inbound_ports: dict[str, int], host: str = "127.0.0.1",
    tls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One sidecar's config: inbound to its service, a registry of the callees' sidecars."""
    return {
        "service": service,
        "inbound": {"port": 0, "forward_to": f"{host}:{service_port}"},
        "outbound": {"port": 0},
        "tls": tls or {"enabled": False},
        "services": {c: {"endpoints": [f"{host}:{inbound_ports[c]}"]} for c in callees(service)},
        # Trip quickly on a failing callee so the demo shows the breaker within its window.
        "breaker": {"consecutive_failures": 5},
        "retry": {"max_retries": 1, "deadline_s": 5},
    }


def gateway_config(inbound_ports: dict[str, int], jwks_file: Path, host: str = "127.0.0.1") -> dict[str, Any]:
    """The gateway's config: public browse and login routes, JWT-protected checkout and orders."""
    def route(name: str, upstream: str, match: dict[str, Any], auth: bool = False) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "match": match, "upstream": upstream, "rate_limit": "per_client",
                                 "timeout_s": 10.0}
        if auth:
            entry["auth"] = {"provider": "shop"}
        return entry

    return {
        "listen_port": 0,
        "admin_port": 0,
        "tracing": {"enabled": True, "service_name": GATEWAY_SERVICE},
        "upstreams": {s: {"endpoints": [f"{host}:{inbound_ports[s]}"]} for s in EDGE_SERVICES},
        "auth": {"shop": {"type": "jwt", "jwks_file": str(jwks_file), "issuer": JWT_ISSUER,
                          "audience": JWT_AUDIENCE}},
        "rate_limits": {"per_client": dict(BASELINE_LIMIT)},
        "routes": [
            route("login", "auth", {"path": "/api/login", "methods": ["POST"]}),
            route("product", "catalog", {"pattern": "/api/products/{id}", "methods": ["GET"]}),
            route("products", "catalog", {"path": "/api/products", "methods": ["GET"]}),
            route("home", "storefront", {"path": "/api/home", "methods": ["GET"]}),
            route("checkout", "checkout", {"path": "/api/checkout", "methods": ["POST"]}, auth=True),
            route("orders", "checkout", {"path": "/api/orders", "methods": ["GET"]}, auth=True),
        ],
    }
