"""Run a dashboard's variable and panel queries on the store, after Grafana-style expansion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dashboards.macros import ALL, QueryContext, TimeRange, VariableValue, auto_interval, expand, parse_interval
from dashboards.model import Annotation, Dashboard, Panel
from gatewatch.errors import GatewatchError
from gatewatch.store import first_line

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

# Panel queries return at most this many rows here, as Grafana caps what a panel draws.
MAX_ROWS = 5000


@dataclass(frozen=True)
class Frame:
    """A query result: column names, their ClickHouse types, and rows."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def column(self, name: str) -> list[Any]:
        """All values of one column."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


@dataclass(frozen=True)
class PanelResult:
    """A panel's expanded SQL and its frame, or the error that stopped it."""

    panel: Panel
    sql: str
    frame: Frame | None = None
    error: str = ""


@dataclass
class DashboardRun:
    """The data one dashboard shows for a time range: variables, panels and annotation marks."""

    dashboard: Dashboard
    context: QueryContext
    panels: list[PanelResult] = field(default_factory=list)
    marks: list[tuple[Annotation, Frame]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_sql(client: Client, sql: str) -> Frame:
    """Run one SELECT and return its frame; ClickHouse errors become GatewatchError."""
    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    try:
        result = client.query(sql, settings={"max_result_rows": MAX_ROWS, "result_overflow_mode": "break"})
    except ClickHouseError as exc:
        raise GatewatchError(first_line(exc)) from None
    return Frame(
        tuple(result.column_names), tuple(t.name for t in result.column_types), tuple(map(tuple, result.result_rows))
    )


def resolve_variables(
    client: Client,
    dashboard: Dashboard,
    time_range: TimeRange,
    interval_s: int,
    chosen: Mapping[str, Sequence[str]],
    constants: Mapping[str, str],
) -> dict[str, VariableValue]:
    """Every variable's value. `chosen` (user input) sets textbox and query variables only: constants
    are inserted unquoted, so only `constants` (trusted, e.g. the database) may change them. Query
    variables default to All (every value their query returns)."""
    values: dict[str, VariableValue] = {}
    for variable in dashboard.variables:
        picked = [v for v in chosen.get(variable.name, ()) if v != ""]
        if variable.type == "constant":
            values[variable.name] = VariableValue.single(constants.get(variable.name, variable.query))
            continue
        if variable.type in ("textbox", "custom"):
            values[variable.name] = VariableValue(tuple(picked) or (variable.query,))
            continue
        if picked and ALL not in picked and "All" not in picked:
            values[variable.name] = VariableValue(tuple(picked))
            continue
        ctx = QueryContext(time_range, interval_s, values)
        options = run_sql(client, expand(variable.query, ctx)) if variable.query else None
        found = tuple(str(row[0]) for row in options.rows) if options else ()
        values[variable.name] = VariableValue(found, is_all=True)
    return values


def run_dashboard(
    client: Client,
    dashboard: Dashboard,
    time_range: TimeRange,
    chosen: Mapping[str, Sequence[str]] | None = None,
    constants: Mapping[str, str] | None = None,
    max_points: int = 120,
) -> DashboardRun:
    """Expand and run every panel and annotation query of one dashboard."""
    interval_s = auto_interval(time_range, max_points)
    try:
        variables = resolve_variables(client, dashboard, time_range, interval_s, chosen or {}, constants or {})
    except GatewatchError as exc:
        run = DashboardRun(dashboard, QueryContext(time_range, interval_s, {}))
        run.errors.append(f"variables: {exc}")
        return run
    run = DashboardRun(dashboard, QueryContext(time_range, interval_s, variables))
    for panel in dashboard.panels:
        run.panels.append(run_panel(client, panel, run.context))
    for annotation in dashboard.annotations:
        try:
            run.marks.append((annotation, run_sql(client, expand(annotation.raw_sql, run.context))))
        except GatewatchError as exc:
            run.errors.append(f"annotation {annotation.name}: {exc}")
    return run


def run_panel(client: Client, panel: Panel, ctx: QueryContext) -> PanelResult:
    """The first query of a panel, expanded and run (its error kept, so one panel can't sink a page)."""
    if not panel.targets:
        return PanelResult(panel, "", error="panel has no SQL query")
    sql = ""
    try:
        # A panel's min interval (e.g. 1m over per-minute rollups) raises the dashboard's auto interval.
        ctx = replace(ctx, interval_s=max(ctx.interval_s, parse_interval(panel.min_interval)))
        sql = expand(panel.targets[0].raw_sql, ctx)
        return PanelResult(panel, sql, frame=run_sql(client, sql))
    except GatewatchError as exc:
        return PanelResult(panel, sql, error=str(exc))
