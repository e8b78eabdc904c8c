"""Who sends traffic: human shoppers and three bot personas, each from its own client address(es).

Every identity talks to the gateway from its own loopback source address (127.x.y.z: all of
127/8 is loopback on Linux), so the gateway sees distinct `client.address` values without
trusting any forwarding header.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from demo.scenario import BotSpec

BROWSER_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36 Edg/124.0.2478.80",
)
SCRAPER_UA = "python-requests/2.32.3"
PRODUCTS = 400
IN_FLIGHT = 16  # a bot keeps at most this many requests open, so a slow shop cannot pile them up


def address(block: int, index: int) -> str:
    """The loopback source address `127.<block>.<hi>.<lo>` of identity `index` in a block."""
    return f"127.{block}.{(index // 250) % 250}.{index % 250 + 2}"


@dataclass
class Tally:
    """What one persona sent and what it got back."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0

    def share(self, status: int) -> float:
        """Share of answered requests with this status."""
        answered = sum(self.statuses.values())
        return self.statuses[status] / answered if answered else 0.0


class Stats:
    """Per-persona tallies for live progress (the summary itself is read from the store)."""

    def __init__(self) -> None:
        self.by_label: dict[str, Tally] = {}

    def tally(self, label: str) -> Tally:
        return self.by_label.setdefault(label, Tally())

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.by_label.values())


@dataclass
class SimContext:
    """What a persona needs: the gateway, a clock, stats and a way to open clients."""

    gateway_url: str
    started: float  # time.monotonic() at the start of the run
    stats: Stats
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    timeout_s: float = 10.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def client(self, source: str, user_agent: str) -> httpx.AsyncClient:
        """An HTTP client bound to a loopback source address (closed by the simulator at the end)."""
        client = httpx.AsyncClient(
            base_url=self.gateway_url,
            transport=httpx.AsyncHTTPTransport(local_address=source),
            headers={"user-agent": user_agent},
            timeout=self.timeout_s,
        )
        self.clients.append(client)
        return client

    async def send(
        self, label: str, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request, tallied; None on a transport error."""
        tally = self.stats.tally(label)
        tally.sent += 1
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError:
            tally.errors += 1
            return None
        tally.statuses[response.status_code] += 1
        return response


async def paced(rate_per_s: float, until_s: float, ctx: SimContext, fire: Callable[[int], Awaitable[None]]) -> None:
    """Call `fire(i)` at `rate_per_s` until `until_s`, with at most IN_FLIGHT calls open."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        try:
            await fire(i)
        finally:
            gate.release()

    i = 0
    next_at = ctx.elapsed()
    while ctx.elapsed() < until_s:
        await gate.acquire()
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        next_at += 1.0 / rate_per_s
        await asyncio.sleep(max(0.0, next_at - ctx.elapsed()))
    if tasks:
        await asyncio.wait(tasks, timeout=ctx.timeout_s)


class Bot(ABC):
    """A bot persona; `addresses` are the client addresses it uses (ground truth)."""

    def __init__(self, spec: BotSpec, index: int, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.addresses = [address(66 + index, i) for i in range(spec.addresses)]

    @property
    def label(self) -> str:
        return self.spec.persona

    async def run(self, ctx: SimContext) -> None:
        """Wait for the window, then send at the spec's rate until it closes."""
        await asyncio.sleep(max(0.0, self.spec.start_s - ctx.elapsed()))
        await self.attack(ctx)

    @abstractmethod
    async def attack(self, ctx: SimContext) -> None:
        """Send this bot's traffic until `spec.end_s`."""


class FastScraper(Bot):
    """Walks every product page as fast as it can, from one address with a library user agent."""

    async def attack(self, ctx: SimContext) -> None:
        client = ctx.client(self.addresses[0], SCRAPER_UA)

        async def fire(i: int) -> None:
            await ctx.send(self.label, client, "GET", f"/api/products/{i % PRODUCTS + 1}")

        await paced(self.spec.rate_per_s, self.spec.end_s, ctx, fire)


class CredentialStuffer(Bot):
    """Replays leaked username/password pairs against the login route with a browser user agent."""

    async def attack(self, ctx: SimContext) -> None:
        client = ctx.client(self.addresses[0], self.rng.choice(BROWSER_UAS))

        async def fire(i: int) -> None:
            creds = {"username": f"user{self.rng.randrange(1000):04d}", "password": f"{self.rng.randrange(10**6):06d}"}
            await ctx.send(self.label, client, "POST", "/api/login", json=creds)

        await paced(self.spec.rate_per_s, self.spec.end_s, ctx, fire)


class LowSlowScraper(Bot):
    """Enumerates products slowly, rotating user agents and client addresses on every request."""

    async def attack(self, ctx: SimContext) -> None:
        clients = [ctx.client(a, BROWSER_UAS[0]) for a in self.addresses]
        start = self.rng.randrange(PRODUCTS)

        async def fire(i: int) -> None:
            headers = {"user-agent": self.rng.choice(BROWSER_UAS)}
            path = f"/api/products/{(start + i) % PRODUCTS + 1}"
            await ctx.send(self.label, clients[i % len(clients)], "GET", path, headers=headers)

        await paced(self.spec.rate_per_s, self.spec.end_s, ctx, fire)


BOTS: dict[str, type[Bot]] = {
    "fast_scraper": FastScraper,
    "credential_stuffer": CredentialStuffer,
    "low_slow_scraper": LowSlowScraper,
}


class Human:
    """One shopping session: browse, maybe log in once, maybe check out, with think times."""

    label = "human"

    def __init__(self, index: int, rng: random.Random, users: dict[str, str], think_time_s: float) -> None:
        self.address = address(10, index)
        self.rng = rng
        self.user, self.password = rng.choice(sorted(users.items()))
        self.think_time_s = think_time_s
        self.user_agent = rng.choice(BROWSER_UAS)
        self.started_s = 0.0
        self.ended_s: float | None = None

    async def think(self) -> None:
        # Log-normal pauses: mostly short, now and then a long read of a page.
        await asyncio.sleep(min(6 * self.think_time_s, self.rng.lognormvariate(0, 0.6) * self.think_time_s * 0.85))

    async def run(self, ctx: SimContext, until_s: float) -> None:
        """Click through the shop until the session ends or `until_s`."""
        client = ctx.client(self.address, self.user_agent)
        token: str | None = None
        clicks = self.rng.randint(8, 22)
        await ctx.send(self.label, client, "GET", "/api/home")
        for _ in range(clicks):
            if ctx.elapsed() >= until_s:
                return
            await self.think()
            roll = self.rng.random()
            if roll < 0.45:
                await ctx.send(self.label, client, "GET", f"/api/products/{self.rng.randint(1, 60)}")
            elif roll < 0.65:
                await ctx.send(self.label, client, "GET", f"/api/products?page={self.rng.randint(1, 3)}")
            elif roll < 0.75:
                await ctx.send(self.label, client, "GET", "/api/home")
            else:
                token = token or await self.login(ctx, client)
                if token:
                    auth = {"authorization": f"Bearer {token}"}
                    if roll < 0.9:
                        await ctx.send(self.label, client, "POST", "/api/checkout", json={"amount": 20}, headers=auth)
                    else:
                        await ctx.send(self.label, client, "GET", "/api/orders", headers=auth)

    async def login(self, ctx: SimContext, client: httpx.AsyncClient) -> str | None:
        """Log in once per session; a person mistypes now and then."""
        if self.rng.random() < 0.1:
            await ctx.send(self.label, client, "POST", "/api/login", json={"username": self.user, "password": "oops"})
            await self.think()
        response = await ctx.send(
            self.label, client, "POST", "/api/login", json={"username": self.user, "password": self.password}
        )
        if response is not None and response.status_code == 200:
            token = response.json().get("token")
            return str(token) if token else None
        return None
