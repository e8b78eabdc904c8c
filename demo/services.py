"""The demo shop: small async HTTP services that call each other through their sidecars.

storefront -> catalog -> inventory, checkout -> inventory, checkout -> payment, and auth (login,
issues ES256 JWTs). Every service strips an optional `/api` prefix, so the gateway may forward
paths as they are. Each service has a `Fault` that the simulator sets for a window, also over
HTTP at `POST /_demo/fault` on the service's own port (not routed by the gateway).
"""

from __future__ import annotations

import asyncio
import hmac
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from demo.faults import Fault, FaultSpec
from demo.httpapp import Request, Response
from demo.signer import Signer

SERVICES = ("storefront", "catalog", "inventory", "checkout", "payment", "auth")
# Service-to-service calls: the edges the sidecars see (caller -> callee).
EDGES = (("storefront", "catalog"), ("catalog", "inventory"), ("checkout", "inventory"), ("checkout", "payment"))
PRODUCTS = 400
JWT_ISSUER = "gatewatch-demo"
JWT_AUDIENCE = "gatewatch-shop"
# Headers a service forwards to its downstream calls so one trace spans the whole request.
PROPAGATED = ("traceparent", "tracestate", "baggage", "x-request-id")
FAULT_PATH = "/_demo/fault"


class Upstreams(Protocol):
    """Where a service sends its call to another service (its sidecar's outbound listener, or direct)."""

    def url(self, caller: str, callee: str, path: str) -> str:
        """The URL for `caller` to reach `callee`'s `path`."""

    def headers(self, caller: str, callee: str) -> dict[str, str]:
        """Extra headers naming the callee for a sidecar (e.g. Host)."""


@dataclass
class DirectUpstreams:
    """Services call each other directly (no sidecars): name -> base URL."""

    base: dict[str, str] = field(default_factory=dict)

    def url(self, caller: str, callee: str, path: str) -> str:
        return f"{self.base[callee]}{path}"

    def headers(self, caller: str, callee: str) -> dict[str, str]:
        return {}


def demo_users(count: int = 200) -> dict[str, str]:
    """The shop's registered users and their passwords (humans in the simulator know theirs)."""
    return {f"user{i:04d}": f"pw-{i * 7919 % 100_003:05d}" for i in range(count)}


@dataclass
class ShopContext:
    """What every service handler can use."""

    name: str
    upstreams: Upstreams
    client: httpx.AsyncClient
    fault: Fault
    signer: Signer
    users: Mapping[str, str]
    rng: random.Random

    async def call(self, callee: str, method: str, path: str, request: Request, body: object = None) -> httpx.Response:
        """Call another service through the upstreams, forwarding trace headers."""
        headers = {k: v for k, v in request.headers.items() if k in PROPAGATED}
        headers.update(self.upstreams.headers(self.name, callee))
        return await self.client.request(
            method, self.upstreams.url(self.name, callee, path), json=body, headers=headers
        )

    async def work(self, mean_s: float = 0.004) -> None:
        """Simulated processing time, so latencies look like a real service."""
        await asyncio.sleep(self.rng.expovariate(1.0 / mean_s))


Route = Callable[[ShopContext, Request, list[str]], Awaitable[Response]]


def _product_id(parts: list[str]) -> int | None:
    try:
        pid = int(parts[1])
    except (IndexError, ValueError):
        return None
    return pid if 1 <= pid <= PRODUCTS else None


async def _catalog(ctx: ShopContext, request: Request, parts: list[str]) -> Response:
    await ctx.work()
    if len(parts) == 1:
        raw = (request.query.get("page") or ["1"])[0]
        page = int(raw) if raw.isdigit() and len(raw) < 6 else 1
        first = (max(1, page) - 1) * 20 + 1
        return Response.json({"products": [{"id": i, "name": f"product {i}"} for i in range(first, first + 20)]})
    pid = _product_id(parts)
    if pid is None:
        return Response.json({"error": "no such product"}, 404)
    stock = await ctx.call("inventory", "GET", f"/stock/{pid}", request)
    available = stock.json().get("stock") if stock.status_code == 200 else None
    return Response.json({"id": pid, "name": f"product {pid}", "price": 5 + pid % 50, "stock": available})


async def _inventory(ctx: ShopContext, request: Request, parts: list[str]) -> Response:
    await ctx.work(0.002)
    if parts[0] == "reserve":
        return Response.json({"reserved": True})
    pid = _product_id(parts)
    return Response.json({"id": pid, "stock": (pid or 0) * 13 % 40}) if pid else Response.json({}, 404)


async def _storefront(ctx: ShopContext, request: Request, parts: list[str]) -> Response:
    await ctx.work()
    featured = await ctx.call("catalog", "GET", "/products?page=1", request)
    items = featured.json().get("products", [])[:6] if featured.status_code == 200 else []
    return Response.json({"featured": items})


async def _checkout(ctx: ShopContext, request: Request, parts: list[str]) -> Response:
    await ctx.work()
    if request.method == "GET":
        return Response.json({"orders": []})
    order = request.json() or {}
    reserved = await ctx.call("inventory", "POST", "/reserve", request, order)
    if reserved.status_code != 200:
        return Response.json({"error": "inventory unavailable"}, 502)
    charge = await ctx.call("payment", "POST", "/charge", request, {"amount": order.get("amount", 10)})
    if charge.status_code != 200:
        return Response.json({"error": "payment unavailable"}, 502)
    return Response.json({"order": f"o-{ctx.rng.randrange(1 << 30):x}", "status": "paid"})


async def _payment(ctx: ShopContext, request: Request, parts: list[str]) -> Response:
    await ctx.work(0.01)
    return Response.json({"charge": f"c-{ctx.rng.randrange(1 << 30):x}"})


async def _auth(ctx: ShopContext, request: Request, parts: list[str]) -> Response:
    await ctx.work(0.006)  # password hashing stand-in
    creds = request.json() or {}
    user, password = str(creds.get("username", "")), str(creds.get("password", ""))
    expected = ctx.users.get(user)
    if expected is None or not hmac.compare_digest(expected, password):
        return Response.json({"error": "invalid credentials"}, 401)
    now = int(time.time())
    claims = {"sub": user, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "iat": now, "exp": now + 1800}
    return Response.json({"token": ctx.signer.sign(claims)})


# service -> first path segment -> handler
ROUTES: dict[str, dict[str, Route]] = {
    "catalog": {"products": _catalog},
    "inventory": {"stock": _inventory, "reserve": _inventory},
    "storefront": {"home": _storefront, "": _storefront},
    "checkout": {"checkout": _checkout, "orders": _checkout},
    "payment": {"charge": _payment},
    "auth": {"login": _auth},
}


def _segments(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "api":
        parts = parts[1:]
    return parts or [""]


class ShopService:
    """One demo service: its routes, its fault, and the fault-injection admin path."""

    def __init__(self, ctx: ShopContext) -> None:
        if ctx.name not in ROUTES:
            raise ValueError(f"unknown demo service {ctx.name!r}")
        self.ctx = ctx

    @property
    def name(self) -> str:
        return self.ctx.name

    async def handle(self, request: Request) -> Response:
        """Serve one request: fault first, then the route."""
        if request.path == FAULT_PATH and request.method == "POST":
            return self._set_fault(request)
        if request.path == "/healthz":
            return Response.json({"ok": True})
        if await self.ctx.fault.apply():
            return Response.json({"error": "injected fault"}, 503)
        parts = _segments(request.path)
        route = ROUTES[self.name].get(parts[0])
        if route is None:
            return Response.json({"error": "not found"}, 404)
        try:
            return await route(self.ctx, request, parts)
        except httpx.HTTPError as exc:
            return Response.json({"error": f"upstream: {type(exc).__name__}"}, 502)

    def _set_fault(self, request: Request) -> Response:
        body = request.json() or {}
        try:
            spec = FaultSpec(float(body.get("error_rate", 0)), float(body.get("latency_s", 0)))
            duration = float(body.get("duration_s", 0))
        except (TypeError, ValueError) as exc:
            return Response.json({"error": str(exc)}, 400)
        self.ctx.fault.inject(spec, duration)
        return Response.json({"service": self.name, "error_rate": spec.error_rate, "latency_s": spec.latency_s})
