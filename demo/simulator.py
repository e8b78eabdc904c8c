"""The traffic simulator: runs a scenario's humans, bots and faults against the gateway.

Seeded (every persona draws from its own `random.Random`), bounded (everything ends at the
scenario's duration) and honest: everything it injects is written as ground truth with times.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from demo.faults import FaultSpec
from demo.groundtruth import TruthRow, TruthSink
from demo.personas import BOTS, Bot, Human, SimContext, Stats
from demo.scenario import FaultWindow, Scenario
from demo.services import EDGES


class FaultInjector(Protocol):
    """Sets a fault on a service for a window (in-process `ShopHost`, or over HTTP)."""

    def inject(self, service: str, spec: FaultSpec, duration_s: float) -> None:
        """Apply `spec` to `service` for `duration_s` seconds."""


class Simulator:
    """One run of a scenario; `stats` are live tallies, `run_id` tags its ground truth."""

    def __init__(
        self, scenario: Scenario, gateway_url: str, injector: FaultInjector, sink: TruthSink, run_id: str,
        users: dict[str, str],
    ) -> None:
        self.scenario = scenario
        self.gateway_url = gateway_url
        self.injector = injector
        self.sink = sink
        self.run_id = run_id
        self.users = users
        self.stats = Stats()
        self.started_at = datetime.now(UTC)
        self._ctx: SimContext | None = None
        self._humans: list[Human] = []
        self.events: list[tuple[float, str]] = []  # (elapsed s, what happened) for progress display

    def rng(self, *parts: object) -> random.Random:
        """A reproducible RNG for one persona of this scenario."""
        return random.Random(":".join(str(p) for p in (self.scenario.seed, *parts)))

    def elapsed(self) -> float:
        return self._ctx.elapsed() if self._ctx else 0.0

    def _at(self, offset_s: float) -> datetime:
        return self.started_at + timedelta(seconds=offset_s)

    async def run(self) -> None:
        """Run the whole scenario; returns after `duration_s` with every client closed."""
        self.started_at = datetime.now(UTC)
        ctx = self._ctx = SimContext(self.gateway_url, time.monotonic(), self.stats)
        bots = [BOTS[spec.persona](spec, i, self.rng("bot", i)) for i, spec in enumerate(self.scenario.bots)]
        tasks = [asyncio.create_task(self._crowd(ctx, slot)) for slot in range(self.scenario.humans)]
        tasks += [asyncio.create_task(self._bot(ctx, bot)) for bot in bots]
        tasks += [asyncio.create_task(self._fault(ctx, fault)) for fault in self.scenario.faults]
        try:
            await asyncio.wait(tasks, timeout=self.scenario.duration_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.aclose() for c in ctx.clients), return_exceptions=True)
            await self._record([self._human_row(h) for h in self._humans])

    async def _record(self, rows: list[TruthRow]) -> None:
        await asyncio.to_thread(self.sink.record, rows)

    def _row(
        self, kind: str, label: str, scope: str, key: str, start_s: float, end_s: float, **details: object
    ) -> TruthRow:
        return TruthRow(
            self.run_id, self.scenario.name, kind, label, scope, key, self._at(start_s), self._at(end_s), dict(details)
        )

    async def _crowd(self, ctx: SimContext, slot: int) -> None:
        """One slot of concurrent humans: a new session starts when the previous one ends."""
        rng = self.rng("human-slot", slot)
        await asyncio.sleep(rng.uniform(0, min(5.0, self.scenario.duration_s / 4)))
        session = 0
        while ctx.elapsed() < self.scenario.duration_s - 1:
            index = slot * 1000 + session
            human = Human(index, self.rng("human", index), self.users, self.scenario.think_time_s)
            human.started_s = ctx.elapsed()
            self._humans.append(human)
            await human.run(ctx, self.scenario.duration_s)
            human.ended_s = ctx.elapsed()
            session += 1

    def _human_row(self, human: Human) -> TruthRow:
        end = human.ended_s if human.ended_s is not None else self.scenario.duration_s
        return self._row("human", "human", "client", human.address, human.started_s, end, user=human.user)

    async def _bot(self, ctx: SimContext, bot: Bot) -> None:
        spec = bot.spec
        await asyncio.sleep(max(0.0, spec.start_s - ctx.elapsed()))
        rows = [
            self._row("bot", spec.persona, "client", addr, spec.start_s, spec.end_s, rate_per_s=spec.rate_per_s,
                      addresses=len(bot.addresses))
            for addr in bot.addresses
        ]
        await self._record(rows)
        self.events.append((ctx.elapsed(), f"{spec.persona} starts from {', '.join(bot.addresses[:2])}"
                            + (" …" if len(bot.addresses) > 2 else "")))
        await bot.run(ctx)

    async def _fault(self, ctx: SimContext, fault: FaultWindow) -> None:
        await asyncio.sleep(max(0.0, fault.start_s - ctx.elapsed()))
        spec = FaultSpec(fault.error_rate, fault.latency_s)
        self.injector.inject(fault.service, spec, fault.end_s - fault.start_s)
        edges = [f"{a}->{b}" for a, b in EDGES if b == fault.service]
        await self._record([
            self._row("fault", "error_rate" if fault.error_rate else "latency", "edge", edge, fault.start_s,
                      fault.end_s, service=fault.service, error_rate=fault.error_rate, latency_s=fault.latency_s)
            for edge in edges
        ])
        self.events.append((ctx.elapsed(), f"fault on {fault.service}: {fault.error_rate:.0%} errors"))
        await asyncio.sleep(max(0.0, fault.end_s - ctx.elapsed()))
        self.events.append((ctx.elapsed(), f"fault on {fault.service} ends"))

