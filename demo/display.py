"""Rich rendering: the live progress panel while the demo runs, and the closing summary tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from demo.personas import Stats
from demo.summary import Summary


@dataclass
class Live:
    """What the progress panel shows, refreshed by the runner."""

    scenario: str
    duration_s: float
    elapsed_s: float = 0.0
    phase: str = "starting"
    spans: int = 0
    decisions: int = 0
    alerts: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)


def progress(live: Live, stats: Stats) -> RenderableType:
    """The live panel: a progress line, per-persona tallies, recent events."""
    done = min(1.0, live.elapsed_s / live.duration_s) if live.duration_s else 1.0
    bar = "█" * int(done * 30) + "░" * (30 - int(done * 30))
    head = Text.assemble(
        (f"{live.phase:<10}", "bold cyan"), f" {bar} {live.elapsed_s:5.0f}/{live.duration_s:.0f} s   ",
        ("spans stored ", "dim"), f"{live.spans:,}   ", ("decisions ", "dim"), f"{live.decisions}   ",
        ("alerts ", "dim"), f"{live.alerts}",
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("persona", "sent", "2xx", "401", "429", "5xx", "errors"):
        table.add_column(column, justify="left" if column == "persona" else "right")
    for label, tally in sorted(stats.by_label.items()):
        s = tally.statuses
        table.add_row(
            label, str(tally.sent), str(sum(n for c, n in s.items() if 200 <= c < 300)), str(s[401]), str(s[429]),
            str(sum(n for c, n in s.items() if c >= 500)), str(tally.errors),
        )
    events = Text("\n".join(f"  +{t:5.1f}s  {what}" for t, what in live.events[-5:]), style="dim")
    return Panel(Group(head, table, events), title=f"gatewatch demo · scenario {live.scenario}", expand=False)


def _rel(ms: int | None, start_ms: int) -> str:
    return "—" if ms is None else f"+{(ms - start_ms) / 1000:.0f}s"


def summary_tables(summary: Summary) -> list[RenderableType]:
    """The closing summary, every number read from the store."""
    start = summary.window.start_ms
    out: list[RenderableType] = []

    overview = Table(title="Traffic (from otel_traces)", show_header=False, title_justify="left")
    overview.add_column(style="bold")
    overview.add_column()
    classes = ", ".join(f"{k} {v:,}" for k, v in summary.status_classes.items()) or "—"
    overview.add_row("requests at the gateway", f"{summary.requests:,} ({classes})")
    overview.add_row("spans stored", f"{summary.spans:,} from {len(summary.services)} services")
    overview.add_row("human clients limited", f"{summary.humans_limited} of {summary.human_clients}")
    overview.add_row("circuits opened with no fault injected", str(summary.spurious_opens))
    out.append(overview)

    bots = Table(title="Bots (ground_truth + decisions + otel_traces)", title_justify="left")
    for column in ("bot", "clients", "started", "requests", "flagged", "decision", "429/403 after decision"):
        bots.add_column(column)
    for b in summary.bots:
        share = b.limited_share
        bots.add_row(
            b.label, str(len(b.addresses)), _rel(b.start_ms, start), f"{b.requests:,}", _rel(b.flagged_ms, start),
            b.decision or "not flagged",
            "—" if share is None else f"{share:.0%} of {b.requests_after:,}",
        )
    out.append(bots)

    faults = Table(title="Faults (ground_truth + decisions + breaker spans)", title_justify="left")
    for column in ("edge", "injected", "circuit opened", "by", "circuit closed", "breaker-open spans"):
        faults.add_column(column)
    for f in summary.faults:
        injected = f"{_rel(f.start_ms, start)}…{_rel(f.end_ms, start)} ({f.details.get('error_rate', 0):.0%} errors)"
        faults.add_row(f.edge, injected, _rel(f.opened_ms, start), f.opened_by or "—", _rel(f.closed_ms, start),
                       f"{f.open_spans:,}")
    out.append(faults)

    decisions = Table(title=f"Decisions ({len(summary.decisions)})", title_justify="left")
    for column in ("at", "kind", "target", "detector", "score", "mode"):
        decisions.add_column(column)
    for d in summary.decisions[:15]:
        decisions.add_row(_rel(d.created_ms, start), d.kind, f"{d.scope}:{d.key}", d.detector, f"{d.score:.2f}",
                          d.mode)
    if len(summary.decisions) > 15:
        decisions.add_row("…", f"{len(summary.decisions) - 15} more", "", "", "", "")
    out.append(decisions)

    alerts = Table(title=f"Alerts ({len(summary.alerts)})", title_justify="left")
    for column in ("at", "alert", "severity", "state", "summary"):
        alerts.add_column(column)
    for a in summary.alerts[:10]:
        alerts.add_row(_rel(a.starts_ms, start), a.name, a.severity, "resolved" if a.resolved else "firing",
                       a.summary[:60])
    out.append(alerts)

    verdict = Text.assemble(
        ("bots limited: ", "bold"), f"{summary.bots_limited}/{len(summary.bots)}   ",
        ("circuits opened: ", "bold"), f"{summary.circuits_opened}/{len(summary.faults)}   ",
        ("report: ", "bold"), summary.report_path or "not rendered",
    )
    out.append(verdict)
    out += [Text(note, style="yellow") for note in summary.notes]
    return out
