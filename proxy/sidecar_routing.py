"""Where sidecar requests go: outbound by callee name, inbound to the local service.

Outbound, the local service names the callee in the Host header (`http://payment/...` through the
outbound listener as an HTTP proxy, or `Host: payment` on a direct request); the port part of Host
is ignored. Unknown names get 404.
"""

from __future__ import annotations

from proxy.headers import HOST_NAMES
from proxy.identity import CALLER_HEADER
from proxy.policy import CallNext, Exchange, NoRoute, Response
from proxy.sidecar_registry import Upstream
from proxy.upstream import Cluster


class OutboundRoute:
    """Selects the callee from the Host header and marks the request as coming from this service."""

    name = "route"

    def __init__(self, service: str, registry: dict[str, Upstream]) -> None:
        self.service = service
        self.registry = registry

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        name = HOST_NAMES[exchange.request.host]
        upstream = self.registry.get(name)
        if upstream is None:
            known = ", ".join(sorted(self.registry)) or "none"
            raise NoRoute(f"unknown service {name!r} in Host (known: {known})")
        exchange.state["upstream"] = upstream
        exchange.upstream = upstream.cluster
        exchange.route = name
        exchange.request.headers.set(CALLER_HEADER, self.service)
        return await call_next(exchange)


class LocalRoute:
    """Sends inbound requests to the local service."""

    name = "local"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        exchange.upstream = self.cluster
        return await call_next(exchange)
