"""The reliability harness: named cases, each reporting what it did, expected and observed.

A case is a function returning a `CaseResult`; the runner catches crashes, prints one table row
per case and writes the rows as JSON. `make reliability` and the pytest fault tests run the same
case functions, at two sizes (`Scale`).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASS, FAIL, CRASH, SKIP = "PASS", "FAIL", "CRASH", "SKIP"


@dataclass(frozen=True)
class Scale:
    """How hard a case pushes: the short size for `make test`, the long one for `make reliability`."""

    spans: int
    seconds: float
    faults: int
    examples: int

    @classmethod
    def short(cls) -> Scale:
        return cls(spans=1_500, seconds=6.0, faults=1, examples=200)

    @classmethod
    def long(cls) -> Scale:
        return cls(spans=20_000, seconds=30.0, faults=3, examples=5_000)

    @classmethod
    def from_env(cls) -> Scale:
        """Long when GATEWATCH_RELIABILITY_LONG=1, else short."""
        return cls.long() if os.environ.get("GATEWATCH_RELIABILITY_LONG") == "1" else cls.short()


@dataclass
class CaseResult:
    """One row of the table: what was done, what was expected, the counts observed, the verdict."""

    name: str
    done: str
    expected: str
    counts: dict[str, float] = field(default_factory=dict)
    ok: bool = False
    verdict: str = FAIL
    detail: str = ""
    seconds: float = 0.0

    def observed(self) -> str:
        """The counts as `key=value` pairs, integers without decimals."""
        parts = []
        for key, value in self.counts.items():
            shown = f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"
            parts.append(f"{key}={shown}")
        return " ".join(parts)


@dataclass(frozen=True)
class Delivery:
    """Acknowledged vs stored spans: the zero-loss check of every fault case, and zero duplicates
    unless the fault allows some (`allowed_duplicates`: a process killed between storing a request
    and answering it, whose client then retries)."""

    sent: int
    acked: int
    stored: int
    lost: int
    duplicated: int
    allowed_duplicates: int = 0

    @property
    def ok(self) -> bool:
        return self.acked > 0 and self.lost == 0 and self.duplicated <= self.allowed_duplicates

    def counts(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def delivery(sent: int, acked_ids: set[str], stored_ids: Sequence[str], allowed_duplicates: int = 0) -> Delivery:
    """Compare acknowledged span ids with the span ids found in the store (rows, not distinct)."""
    unique = set(stored_ids)
    return Delivery(
        sent=sent,
        acked=len(acked_ids),
        stored=len(unique),
        lost=len(acked_ids - unique),
        duplicated=len(stored_ids) - len(unique),
        allowed_duplicates=allowed_duplicates,
    )


def finish(result: CaseResult, outcome: Delivery, **extra: float) -> CaseResult:
    """Fill a delivery case's counts and verdict."""
    result.counts = {**outcome.counts(), **extra}
    result.ok = outcome.ok
    result.verdict = PASS if outcome.ok else FAIL
    return result


Case = Callable[[Scale], CaseResult]


def run_case(name: str, case: Case, scale: Scale) -> CaseResult:
    """Run one case; an exception becomes a CRASH row instead of stopping the run."""
    started = time.monotonic()
    try:
        result = case(scale)
    except Exception as exc:  # a crash of the system under test is a result, not an abort
        result = CaseResult(name, "-", "-", verdict=CRASH, detail=f"{type(exc).__name__}: {exc}")
        result.detail += "\n" + "".join(traceback.format_exc(limit=6))
    result.seconds = round(time.monotonic() - started, 1)
    return result


def render_table(results: Sequence[CaseResult]) -> str:
    """A plain-text table: case, what was done, expected, observed counts, verdict."""
    header = ("case", "done", "expected", "observed", "verdict")
    rows = [header] + [(r.name, r.done, r.expected, r.observed(), r.verdict) for r in results]
    widths = [min(max(len(row[i]) for row in rows), 60) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [_wrap(cell, widths[i]) for i, cell in enumerate(row)]
        height = max(len(c) for c in cells)
        for line in range(height):
            parts = [(c[line] if line < len(c) else "").ljust(widths[i]) for i, c in enumerate(cells)]
            lines.append(" | ".join(parts).rstrip())
        if index == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    lines.append(current)
    return lines


def write_json(results: Sequence[CaseResult], path: Path) -> None:
    """The rows as JSON, for bench/results/reliability.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"cases": [asdict(r) for r in results], "ok": all(r.verdict in (PASS, SKIP) for r in results)}
    path.write_text(json.dumps(payload, indent=2))


def exit_code(results: Sequence[CaseResult]) -> int:
    """Non-zero on any loss, duplicate, failed check or crash."""
    return 0 if all(r.verdict in (PASS, SKIP) for r in results) else 1
