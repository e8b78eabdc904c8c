"""The traffic simulator: scenarios, seeded personas, distinct client addresses, ground truth."""

from __future__ import annotations

from collections import Counter

import pytest

from demo.groundtruth import MemorySink
from demo.httpapp import Request, Response, bound_port, serve
from demo.personas import Human
from demo.scenario import BotSpec, FaultWindow, Scenario, get_scenario
from demo.services import demo_users
from gatewatch.errors import GatewatchError
from gatewatch.loopthread import LoopThread


class Recorder:
    """A stand-in gateway that answers 200 and remembers who asked what."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []

    async def handle(self, request: Request) -> Response:
        self.seen.append((request.peer, request.method, request.path, request.headers.get("user-agent", "")))
        if request.path == "/api/login":
            return Response.json({"token": "t"}, 200)
        return Response.json({}, 200)


class Injector:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    def inject(self, service, spec, duration_s):
        self.calls.append((service, spec.error_rate, duration_s))


def test_scenarios_are_bounded_and_validated():
    demo = get_scenario("demo")
    assert demo.duration_s + demo.drain_s < 150  # leaves room for startup inside 3 minutes
    assert all(b.end_s <= demo.duration_s for b in demo.bots)
    short = get_scenario("demo", duration_s=55)
    assert short.duration_s == 55 and short.bots[0].start_s == pytest.approx(15 * 55 / 110)
    with pytest.raises(GatewatchError, match="unknown scenario"):
        get_scenario("nope")
    with pytest.raises(ValueError, match="unknown bot persona"):
        BotSpec("hammer", 0, 1, 1)
    with pytest.raises(ValueError):
        BotSpec("fast_scraper", 5, 1, 1)


def test_humans_are_seeded():
    import random

    users = demo_users()
    a = Human(3, random.Random("7:human:3"), users, 1.0)
    b = Human(3, random.Random("7:human:3"), users, 1.0)
    assert (a.user, a.user_agent, a.address) == (b.user, b.user_agent, b.address)


def test_run_sends_from_distinct_addresses_and_records_ground_truth():
    from demo.simulator import Simulator

    scenario = Scenario(
        "t", "test", duration_s=3.0, humans=2, think_time_s=0.05,
        bots=(BotSpec("fast_scraper", 0.2, 2.5, 20), BotSpec("credential_stuffer", 0.2, 2.5, 10),
              BotSpec("low_slow_scraper", 0.2, 2.8, 10, addresses=3)),
        faults=(FaultWindow("payment", 0.5, 2.0, error_rate=0.5),),
    )
    recorder, injector, sink = Recorder(), Injector(), MemorySink()
    loop = LoopThread("test-sim")
    loop.start()
    try:
        server = loop.run(serve(recorder.handle, "127.0.0.1", 0))
        sim = Simulator(scenario, f"http://127.0.0.1:{bound_port(server)}", injector, sink, "run-t", demo_users())
        loop.run(sim.run(), timeout_s=30)
        server.close()
    finally:
        loop.stop(drain_s=5.0)

    truth = Counter((r.kind, r.label) for r in sink.rows)
    assert truth[("bot", "fast_scraper")] == 1 and truth[("bot", "credential_stuffer")] == 1
    assert truth[("bot", "low_slow_scraper")] == 3
    assert truth[("fault", "error_rate")] == 1  # payment has one caller: checkout
    assert truth[("human", "human")] >= 2
    [fault] = [r for r in sink.rows if r.kind == "fault"]
    assert fault.key == "checkout->payment" and fault.scope == "edge" and fault.end_at > fault.start_at
    assert injector.calls == [("payment", 0.5, 1.5)]

    bots = {r.key: r.label for r in sink.rows if r.kind == "bot"}
    by_peer = Counter(peer for peer, *_ in recorder.seen)
    for address, label in bots.items():
        assert by_peer[address] > 0, f"{label} at {address} sent nothing"
    stuffer = next(a for a, label in bots.items() if label == "credential_stuffer")
    assert {(m, p) for peer, m, p, _ in recorder.seen if peer == stuffer} == {("POST", "/api/login")}
    rotating = [a for a, label in bots.items() if label == "low_slow_scraper"]
    assert len({ua for peer, *_, ua in recorder.seen if peer in rotating}) > 1
    humans = {r.key for r in sink.rows if r.kind == "human"}
    assert not humans & set(bots)
    assert sim.stats.tally("fast_scraper").sent >= 20
    assert sim.stats.sent == len(recorder.seen)


def test_unreachable_gateway_counts_errors_without_hanging():
    from demo.simulator import Simulator

    scenario = Scenario("t", "test", duration_s=1.0, humans=1, bots=(BotSpec("fast_scraper", 0, 0.9, 10),))
    loop = LoopThread("test-sim-down")
    loop.start()
    try:
        sim = Simulator(scenario, "http://127.0.0.1:9", Injector(), MemorySink(), "run-d", demo_users())
        loop.run(sim.run(), timeout_s=20)
    finally:
        loop.stop(drain_s=5.0)
    assert sim.stats.tally("fast_scraper").errors > 0
    assert sim.stats.tally("fast_scraper").statuses == Counter()
