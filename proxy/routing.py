"""Routes by path (prefix, exact or template), method and host; first match in config order wins."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from proxy.bodies import BodyTooLarge, limit_body
from proxy.headers import HOST_NAMES
from proxy.policy import CallNext, Exchange, NoRoute, Response
from proxy.upstream import Cluster


def _template_regex(pattern: str) -> re.Pattern[str]:
    """`/users/{id}/orders` -> a regex where each `{name}` matches one path segment."""
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", pattern)
    body = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(f"^{body}$")


@dataclass
class Route:
    """A compiled route: matching rules plus what the chain's policies need about it."""

    name: str
    http_route: str  # low-cardinality template for spans, metrics and route decisions
    cluster: Cluster
    timeout_s: float
    max_body_bytes: int
    prefix: str | None = None
    path: str | None = None
    regex: re.Pattern[str] | None = None
    methods: frozenset[str] = frozenset()
    host: str | None = None
    strip_prefix: bool = False
    policy: dict[str, Any] = field(default_factory=dict)  # per-route settings of other policies

    def matches(self, method: str, host: str, path: str) -> bool:
        """Whether this route serves the request."""
        if self.methods and method not in self.methods:
            return False
        if self.host is not None and HOST_NAMES[host] != self.host:
            return False
        if self.prefix is not None:
            return path.startswith(self.prefix)
        if self.path is not None:
            return path == self.path
        return self.regex is not None and self.regex.match(path) is not None

    def decision_key(self, method: str) -> str:
        """The route's key in decisions: `METHOD http.route` (e.g. `GET /api/login`)."""
        return f"{method} {self.http_route}"


def make_route(
    name: str, cluster: Cluster, timeout_s: float, max_body_bytes: int, *, prefix: str | None = None,
    path: str | None = None, pattern: str | None = None, methods: list[str] | None = None,
    host: str | None = None, strip_prefix: bool = False,
) -> Route:
    """Compile one route from its match rules."""
    http_route = pattern or path or (f"{prefix}*" if prefix else "/")
    return Route(
        name=name, http_route=http_route, cluster=cluster, timeout_s=timeout_s, max_body_bytes=max_body_bytes,
        prefix=prefix, path=path, regex=_template_regex(pattern) if pattern else None,
        methods=frozenset(m.upper() for m in methods or ()), host=host.lower() if host else None,
        strip_prefix=strip_prefix,
    )


def http_route_of(exchange: Exchange) -> str | None:
    """The matched route's template (`http.route`), or None before routing or without a match."""
    route: Route | None = exchange.route
    return route.http_route if route is not None else None


class Router:
    """An ordered route table."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def match(self, method: str, host: str, path: str) -> Route | None:
        """The first route that serves the request, if any."""
        for route in self.routes:
            if route.matches(method, host, path):
                return route
        return None


class RoutingPolicy:
    """Picks the route and upstream, applies the route's timeout and body limit (413)."""

    name = "routing"

    def __init__(self, router: Router) -> None:
        self.router = router

    def handle(self, exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        request = exchange.request
        route = self.router.match(request.method, request.host, request.path)
        if route is None:
            raise NoRoute(f"no route for {request.method} {request.path}")
        exchange.route = route
        exchange.upstream = route.cluster
        exchange.timeout_s = route.timeout_s
        if request.content_length is not None:
            if request.content_length > route.max_body_bytes:
                raise BodyTooLarge(f"request body over {route.max_body_bytes} bytes")
        elif "transfer-encoding" in request.headers:
            request.body = limit_body(request.body, route.max_body_bytes)
        if route.strip_prefix and route.prefix:
            request.path = "/" + request.path[len(route.prefix):].lstrip("/")
        return call_next(exchange)  # unawaited: no frame of ours while the request is upstream
