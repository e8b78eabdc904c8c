"""The overload case: the gateway driven at twice the rate its route limit allows, then at twice
its own measured capacity (admission control: max in-flight requests in front of a slow upstream).

Load is open-loop (requests start on a fixed schedule whatever the answers) and latency counts
from the scheduled start, so a stalled gateway shows up as latency rather than as a slower client.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewatch.settings import Settings
from tests.faults.harness import FAIL, PASS, CaseResult, Scale
from tests.faults.httpprobe import echo_server

P99_BOUND_S = 1.0  # admitted requests, on a shared 2-core machine
MAX_CONCURRENT = 256
CAPACITY_INFLIGHT = 8  # the gateway's max_inflight in the capacity phase
UPSTREAM_DELAY_S = 0.05  # so capacity is about CAPACITY_INFLIGHT / delay = 160/s, within the client's reach


@dataclass
class Phase:
    """Answers of one load phase."""

    statuses: dict[int, int] = field(default_factory=dict)
    admitted_s: list[float] = field(default_factory=list)
    errors: int = 0
    overflow: int = 0

    def p99_ms(self) -> float:
        if not self.admitted_s:
            return 0.0
        ordered = sorted(self.admitted_s)
        return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def share(self, *codes: int) -> float:
        total = sum(self.statuses.values()) + self.errors
        return sum(self.statuses.get(code, 0) for code in codes) / total if total else 0.0


class Pool:
    """Keep-alive connections to the gateway, opened on demand."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> int:
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if b"connection: close" in head.lower():
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def max_rate(pool: Pool, workers: int, seconds: float) -> float:
    """Closed loop: `workers` back-to-back clients for `seconds`; the rate of 200s they got."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while loop.time() < deadline:
            if await asyncio.wait_for(pool.get("/api/items"), 10.0) == 200:
                done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / seconds


async def drive(pool: Pool, rate: float, seconds: float) -> Phase:
    """Start `rate` requests per second for `seconds`; wait for every answer."""
    phase = Phase()
    loop = asyncio.get_running_loop()
    start = loop.time()
    inflight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        try:
            status = await asyncio.wait_for(pool.get("/api/items"), 10.0)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            phase.errors += 1
            return
        phase.statuses[status] = phase.statuses.get(status, 0) + 1
        if status == 200:
            phase.admitted_s.append(loop.time() - scheduled)

    for index in range(int(rate * seconds)):
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        if len(inflight) >= MAX_CONCURRENT:
            phase.overflow += 1  # the client cannot keep up: counted, not hidden
            continue
        task = asyncio.create_task(one(scheduled))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(inflight, timeout=30.0)
    return phase


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gateway_overload(settings: Settings, scale: Scale) -> CaseResult:
    """Route limit R: drive R/2 (warm), 2R (overload), R/2 (recovery); then the same against the
    gateway's own capacity C (max_inflight in front of a slow upstream): measure C, drive 2C, C/2."""
    limit = 100.0 if scale.spans < 10_000 else 200.0
    seconds = max(4.0, scale.seconds / 2)
    cap_seconds = max(3.0, scale.seconds / 2)
    result = CaseResult(
        "gateway_overload",
        f"route limit {limit:.0f}/s; open-loop load {limit / 2:.0f}/s 2 s, {2 * limit:.0f}/s {seconds:.0f} s, "
        f"{limit / 2:.0f}/s 3 s; then max_inflight {CAPACITY_INFLIGHT}, upstream {UPSTREAM_DELAY_S * 1000:.0f} ms: "
        f"capacity C measured closed-loop 1.5 s, open-loop 2C {cap_seconds:.0f} s, C/2 2 s",
        f"excess shed with 429/503, no other errors; admitted p99 < {P99_BOUND_S * 1000:.0f} ms; fds and RSS "
        "back near the start; all admitted after the load drops",
    )
    route = {"route_limit": {"rate_per_s": limit, "burst": int(limit / 10)}}
    with echo_server() as (upstream_port, _seen), _gateway(settings, upstream_port, route, {}) as port:
        fds0, rss0 = _fds(), _rss_mb()
        warm, over, after, fds1 = asyncio.run(_phases(port, limit, seconds))
        time.sleep(0.5)
        fds2, rss2 = _fds(), _rss_mb()
    result.counts = _counts(over, after, fds0, fds1, fds2, rss2 - rss0)
    limits = {"max_inflight": CAPACITY_INFLIGHT}
    with echo_server(delay_s=UPSTREAM_DELAY_S) as (upstream_port, _seen), \
            _gateway(settings, upstream_port, {}, limits) as port:
        fds0, rss0 = _fds(), _rss_mb()
        capacity, cap_over, cap_after, fds1 = asyncio.run(_capacity_phases(port, cap_seconds))
        time.sleep(0.5)
        fds2, rss2 = _fds(), _rss_mb()
    cap = _counts(cap_over, cap_after, fds0, fds1, fds2, rss2 - rss0)
    cap["max_rate_per_s"] = round(capacity, 1)
    # fds are counted with the gateway still up: its keep-alive pool to the (in-process) upstream may
    # hold up to max_inflight connections, two fds each here; anything beyond that would be a leak.
    result.counts.update({f"cap_{name}": value for name, value in cap.items()})
    result.ok = _ok(result.counts) and warm.share(200) == 1.0 and _ok(cap, fd_slack=5 + 2 * CAPACITY_INFLIGHT)
    result.verdict = PASS if result.ok else FAIL
    return result


@contextmanager
def _gateway(settings: Settings, upstream_port: int, route: dict[str, Any], limits: dict[str, Any]) -> Iterator[int]:
    """A gateway with one catch-all route to the upstream; yields its port."""
    from proxy.gateway import GatewayService
    from proxy.gatewayconfig import GatewayConfig

    config = GatewayConfig.model_validate({
        "listen_port": 0, "admin_port": 0, "tracing": {"enabled": False}, "limits": limits,
        "upstreams": {"api": {"endpoints": [f"127.0.0.1:{upstream_port}"]}},
        "routes": [{"name": "api", "match": {"prefix": "/"}, "upstream": "api", **route}],
    })
    gateway = GatewayService(config, settings)
    gateway.start()
    try:
        yield gateway.port
    finally:
        gateway.stop(5.0)


def _counts(over: Phase, after: Phase, fds0: int, fds1: int, fds2: int, rss_growth_mb: float) -> dict[str, float]:
    """The table's figures for one overload phase and its recovery."""
    total = sum(over.statuses.values()) + over.errors
    shed = over.statuses.get(429, 0) + over.statuses.get(503, 0)
    return {
        "sent_overload": float(total), "admitted": float(over.statuses.get(200, 0)),
        "shed_429": float(over.statuses.get(429, 0)), "shed_503": float(over.statuses.get(503, 0)),
        "shed_429_503": float(shed), "other": float(total - over.statuses.get(200, 0) - shed),
        "client_overflow": float(over.overflow), "p99_admitted_ms": round(over.p99_ms(), 1),
        "recovery_ok_share": round(after.share(200), 3), "recovery_p99_ms": round(after.p99_ms(), 1),
        "fd_start": float(fds0), "fd_end": float(fds2),
        "fd_growth": float(fds2 - fds0), "fd_peak_growth": float(fds1 - fds0), "rss_growth_mb": round(rss_growth_mb, 1),
    }


def _ok(c: dict[str, float], fd_slack: int = 5) -> bool:
    return (c["other"] == 0 and c["shed_429_503"] > 0 and c["p99_admitted_ms"] < P99_BOUND_S * 1000
            and c["recovery_ok_share"] == 1.0 and c["fd_growth"] <= fd_slack and c["rss_growth_mb"] < 100)


async def _overload_then_recover(
    pool: Pool, rate: float, seconds: float, recovery_s: float,
) -> tuple[Phase, Phase, int]:
    """Drive 2x `rate` for `seconds`, pause, then rate/2: both phases and the fd count at the peak."""
    over = await drive(pool, 2 * rate, seconds)
    peak_fds = _fds()
    await asyncio.sleep(1.0)
    after = await drive(pool, rate / 2, recovery_s)
    return over, after, peak_fds


async def _phases(port: int, limit: float, seconds: float) -> tuple[Phase, Phase, Phase, int]:
    pool = Pool(port)
    try:
        warm = await drive(pool, limit / 2, 2.0)
        await asyncio.sleep(0.2)  # let the bucket refill after the warm phase
        over, after, peak_fds = await _overload_then_recover(pool, limit, seconds, 3.0)
    finally:
        pool.close()
        await asyncio.sleep(0.1)
    return warm, over, after, peak_fds


async def _capacity_phases(port: int, seconds: float) -> tuple[float, Phase, Phase, int]:
    """Measure the gateway's max rate closed-loop, drive twice that open-loop, then half of it."""
    pool = Pool(port)
    try:
        capacity = await max_rate(pool, CAPACITY_INFLIGHT, 1.5)
        over, after, peak_fds = await _overload_then_recover(pool, capacity, seconds, 2.0)
    finally:
        pool.close()
        await asyncio.sleep(0.1)
    return capacity, over, after, peak_fds
