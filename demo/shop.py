"""`ShopHost`: runs every demo service on one event-loop thread (a `gatewatch.service.Service`)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import httpx

from demo.faults import Fault, FaultSpec
from demo.httpapp import bound_port, serve
from demo.services import SERVICES, DirectUpstreams, ShopContext, ShopService, Upstreams, demo_users
from demo.signer import Signer
from gatewatch.loopthread import LoopThread


@dataclass
class RoutedUpstreams:
    """Upstreams that can be rewired after start (sidecars start after the services they front)."""

    target: Upstreams = field(default_factory=DirectUpstreams)

    def url(self, caller: str, callee: str, path: str) -> str:
        return self.target.url(caller, callee, path)

    def headers(self, caller: str, callee: str) -> dict[str, str]:
        return self.target.headers(caller, callee)


class ShopHost:
    """The demo shop's services on 127.0.0.1 (ports 0 by default); `ports` maps name -> port."""

    name = "shop"

    def __init__(self, host: str = "127.0.0.1", seed: int = 0) -> None:
        self.host = host
        self.seed = seed
        self.signer = Signer()
        self.users = demo_users()
        self.upstreams = RoutedUpstreams()
        self.faults = {name: Fault(seed + i) for i, name in enumerate(SERVICES)}
        self.ports: dict[str, int] = {}
        self._loop: LoopThread | None = None
        self._servers: list[asyncio.Server] = []
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        """Start every service; returns when all listen."""
        self._loop = LoopThread("demo-shop", self._start, self._stop)
        self._loop.start()
        # Until sidecars are wired in, services call each other directly.
        self.upstreams.target = DirectUpstreams({n: f"http://{self.host}:{p}" for n, p in self.ports.items()})

    async def _start(self) -> None:
        self._client = httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=200))
        for i, name in enumerate(SERVICES):
            ctx = ShopContext(
                name, self.upstreams, self._client, self.faults[name], self.signer, self.users,
                random.Random(self.seed * 1000 + i),
            )
            server = await serve(ShopService(ctx).handle, self.host, 0)
            self._servers.append(server)
            self.ports[name] = bound_port(server)

    def url(self, service: str) -> str:
        """Base URL of a service's own listener."""
        return f"http://{self.host}:{self.ports[service]}"

    def inject(self, service: str, spec: FaultSpec, duration_s: float) -> None:
        """Set a fault on a service for a window."""
        self.faults[service].inject(spec, duration_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close listeners and the client, stop the loop."""
        if self._loop is not None:
            self._loop.stop(drain_s=timeout_s)
            self._loop = None

    async def _stop(self, drain_s: float) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        if self._client is not None:
            await self._client.aclose()
