"""Scenarios: who visits the shop, which bots attack when, which service fails when. Seeded."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatewatch.errors import GatewatchError

BOT_PERSONAS = ("fast_scraper", "credential_stuffer", "low_slow_scraper")


@dataclass(frozen=True)
class BotSpec:
    """One bot: its persona, active window (seconds from the start) and request rate."""

    persona: str
    start_s: float
    end_s: float
    rate_per_s: float
    addresses: int = 1  # low-and-slow scrapers rotate over several client addresses

    def __post_init__(self) -> None:
        if self.persona not in BOT_PERSONAS:
            raise ValueError(f"unknown bot persona {self.persona!r}; known: {', '.join(BOT_PERSONAS)}")
        if not 0 <= self.start_s < self.end_s or self.rate_per_s <= 0 or self.addresses < 1:
            raise ValueError(f"bad window or rate for bot {self.persona}")


@dataclass(frozen=True)
class FaultWindow:
    """Errors and/or latency injected into one service during a window."""

    service: str
    start_s: float
    end_s: float
    error_rate: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """Everything the simulator does in one run."""

    name: str
    description: str
    duration_s: float
    seed: int = 7
    humans: int = 10  # concurrent human sessions
    think_time_s: float = 1.2  # mean pause between a human's clicks
    bots: tuple[BotSpec, ...] = ()
    faults: tuple[FaultWindow, ...] = ()
    drain_s: float = 8.0  # after traffic stops: let spans reach the store and detectors run once more
    tags: dict[str, str] = field(default_factory=dict)

    def with_duration(self, duration_s: float) -> Scenario:
        """The same scenario squeezed or stretched to `duration_s` (every window scaled)."""
        if duration_s <= 0:
            raise GatewatchError("--duration must be positive")
        k = duration_s / self.duration_s
        bots = tuple(
            BotSpec(b.persona, b.start_s * k, b.end_s * k, b.rate_per_s, b.addresses) for b in self.bots
        )
        faults = tuple(
            FaultWindow(f.service, f.start_s * k, f.end_s * k, f.error_rate, f.latency_s) for f in self.faults
        )
        return Scenario(
            self.name, self.description, duration_s, self.seed, self.humans, self.think_time_s, bots, faults,
            self.drain_s, dict(self.tags),
        )


SCENARIOS: dict[str, Scenario] = {
    "demo": Scenario(
        name="demo",
        description="humans shopping; a fast scraper, a credential stuffer and a low-and-slow scraper; "
        "payment fails for 40 s",
        duration_s=110.0,
        humans=10,
        bots=(
            BotSpec("fast_scraper", 15, 95, rate_per_s=12),
            BotSpec("credential_stuffer", 25, 100, rate_per_s=5),
            BotSpec("low_slow_scraper", 10, 105, rate_per_s=2.5, addresses=6),
        ),
        faults=(FaultWindow("payment", 40, 80, error_rate=0.7, latency_s=0.05),),
    ),
    "short": Scenario(
        name="short",
        description="shortened loop for end-to-end tests: one fast scraper, payment fails for 30 s",
        duration_s=60.0,
        humans=6,
        think_time_s=0.8,
        bots=(BotSpec("fast_scraper", 5, 58, rate_per_s=12),),
        faults=(FaultWindow("payment", 10, 40, error_rate=0.8),),
        drain_s=6.0,
    ),
    "calm": Scenario(
        name="calm",
        description="humans only, no bots and no faults (baseline for false positives)",
        duration_s=60.0,
    ),
}


def get_scenario(name: str, duration_s: float | None = None) -> Scenario:
    """A named scenario, optionally rescaled; GatewatchError names the known ones."""
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise GatewatchError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None
    return scenario.with_duration(duration_s) if duration_s else scenario
