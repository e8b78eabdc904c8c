"""Read Grafana dashboard JSON into the few typed fields the renderer needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewatch.errors import GatewatchError

DASHBOARD_DIR = Path(__file__).parent / "grafana"


@dataclass(frozen=True)
class Target:
    """One query of a panel."""

    raw_sql: str
    query_type: str


@dataclass(frozen=True)
class Panel:
    """A panel: visualization type, queries, unit and place on the 24-column grid."""

    id: int
    title: str
    type: str
    targets: tuple[Target, ...]
    unit: str
    x: int
    y: int
    w: int
    h: int
    description: str = ""
    min_interval: str = ""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable: `query` holds the SQL (query type) or the value (constant, textbox)."""

    name: str
    type: str
    query: str
    label: str = ""
    include_all: bool = False
    multi: bool = False


@dataclass(frozen=True)
class Annotation:
    """An annotation query whose rows mark times on every time-series panel."""

    name: str
    raw_sql: str
    color: str


@dataclass(frozen=True)
class Dashboard:
    """One dashboard as Grafana would load it."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...]
    annotations: tuple[Annotation, ...]


def _panel(raw: dict[str, Any]) -> Panel:
    grid = raw.get("gridPos", {})
    targets = tuple(
        Target(t.get("rawSql", ""), t.get("queryType", "table")) for t in raw.get("targets", []) if t.get("rawSql")
    )
    return Panel(
        id=int(raw.get("id", 0)), title=raw.get("title", ""), type=raw.get("type", ""), targets=targets,
        unit=raw.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
        x=int(grid.get("x", 0)), y=int(grid.get("y", 0)), w=int(grid.get("w", 12)), h=int(grid.get("h", 8)),
        description=raw.get("description", ""), min_interval=str(raw.get("interval") or ""),
    )


def _variable(raw: dict[str, Any]) -> Variable:
    query = raw.get("query", "")
    if isinstance(query, dict):  # newer Grafana stores query variables as {"query": "..."}
        query = query.get("query", "") or query.get("rawSql", "")
    return Variable(
        name=raw["name"], type=raw.get("type", ""), query=str(query), label=raw.get("label", ""),
        include_all=bool(raw.get("includeAll")), multi=bool(raw.get("multi")),
    )


def _annotation(raw: dict[str, Any]) -> Annotation | None:
    sql = raw.get("target", {}).get("rawSql", "")
    if not sql or not raw.get("enable", True):
        return None
    return Annotation(raw.get("name", ""), sql, raw.get("iconColor", "#F2495C"))


def parse_dashboard(data: dict[str, Any]) -> Dashboard:
    """A Dashboard from Grafana's JSON model (rows are flattened, their panels kept)."""
    raw_panels: list[dict[str, Any]] = []
    for raw in data.get("panels", []):
        raw_panels.extend(raw.get("panels", []) if raw.get("type") == "row" else [raw])
    annotations = (_annotation(a) for a in data.get("annotations", {}).get("list", []))
    return Dashboard(
        uid=data.get("uid", ""), title=data.get("title", ""), description=data.get("description", ""),
        panels=tuple(sorted((_panel(p) for p in raw_panels), key=lambda p: (p.y, p.x))),
        variables=tuple(_variable(v) for v in data.get("templating", {}).get("list", [])),
        annotations=tuple(a for a in annotations if a is not None),
    )


def load_dashboards(directory: Path = DASHBOARD_DIR) -> list[Dashboard]:
    """Every dashboard JSON file in a directory, sorted by file name."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise GatewatchError(f"no dashboard JSON in {directory}")
    dashboards = []
    for path in files:
        try:
            dashboards.append(parse_dashboard(json.loads(path.read_text())))
        except (ValueError, KeyError, TypeError) as exc:
            raise GatewatchError(f"dashboard {path} is not valid Grafana JSON: {exc}") from None
    return dashboards
