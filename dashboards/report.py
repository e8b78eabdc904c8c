"""The local report: every dashboard's panels, queried on the store and drawn into one HTML page.

The page is self-contained (inline CSS, SVG and a few lines of JS; no network), so it opens from a
file on a machine without Grafana or Docker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from dashboards import charts
from dashboards.macros import TimeRange
from dashboards.model import DASHBOARD_DIR, Dashboard, load_dashboards
from dashboards.query import DashboardRun, PanelResult, run_dashboard

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from gatewatch.settings import Settings

DEFAULT_RANGE = timedelta(hours=1)

CSS = """
body{margin:0;background:#111217;color:#ccccdc;font:13px/1.4 system-ui,sans-serif}
header{padding:12px 20px;background:#181b1f;border-bottom:1px solid #2c3235}
header h1{margin:0;font-size:18px}header p{margin:2px 0 0;color:#8e8e9e}
nav a{color:#6e9fff;margin-right:14px;text-decoration:none}
h2{margin:24px 20px 4px;font-size:16px}h2+p{margin:0 20px 8px;color:#8e8e9e}
.grid{display:grid;grid-template-columns:repeat(24,1fr);gap:8px;padding:0 20px}
.panel{background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:8px;min-width:0}
.panel h3{margin:0 0 6px;font-size:13px;font-weight:500}
.panel.empty .body::after{content:"No data";color:#8e8e9e}
.error{color:#F2495C;white-space:pre-wrap}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:#2c3235;stroke-width:1}svg .axis{fill:#8e8e9e;font-size:10px}
svg polyline{fill:none;stroke-width:1.6}svg .mark{stroke-dasharray:4 3;stroke-width:1.2}
svg .hidden{display:none}
.legend{list-style:none;margin:4px 0 0;padding:0;display:flex;flex-wrap:wrap;gap:4px 12px;font-size:11px}
.legend li{cursor:pointer}.legend li.off{opacity:.4}
.legend i{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}
.table{max-height:320px;overflow:auto}table{border-collapse:collapse;width:100%;font-size:12px}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #2c3235;white-space:nowrap}
th{color:#8e8e9e;font-weight:500;position:sticky;top:0;background:#181b1f}
.stats{display:flex;gap:16px;flex-wrap:wrap;align-items:center;min-height:120px}
.stat b{display:block;font-size:28px;color:#73BF69}.stat span{color:#8e8e9e}
details{margin-top:4px;color:#8e8e9e}details pre{white-space:pre-wrap;font-size:11px}
"""

# Clicking a legend entry hides or shows its series, as in Grafana.
SCRIPT = """
document.querySelectorAll('.legend li').forEach(function (item) {
  item.addEventListener('click', function () {
    item.classList.toggle('off');
    document.querySelectorAll('svg [data-series="' + item.dataset.series + '"]').forEach(function (el) {
      el.classList.toggle('hidden');
    });
  });
});
document.body.dataset.panels = String(document.querySelectorAll('.panel').length);
"""


def _marks(run: DashboardRun) -> list[charts.Mark]:
    found: list[charts.Mark] = []
    for annotation, frame in run.marks:
        if "time" in frame.columns:
            texts = frame.column("text") if "text" in frame.columns else [annotation.name] * len(frame.rows)
            found.extend((charts.as_utc(t), str(x), annotation.color) for t, x in zip(frame.column("time"), texts,
                                                                                       strict=True))
    return found


def draw_panel(result: PanelResult, run: DashboardRun) -> tuple[str, int]:
    """The panel body's HTML and how many marks it drew."""
    frame, panel = result.frame, result.panel
    if frame is None:
        return f'<div class="error">{escape(result.error)}</div>', 0
    chart_id = f"{run.dashboard.uid}-{panel.id}"
    if panel.type == "timeseries":
        return charts.timeseries(frame, run.context.time_range, panel.unit, _marks(run), chart_id)
    if panel.type == "barchart":
        return charts.barchart(frame, panel.unit)
    if panel.type == "stat":
        return charts.stat(frame, panel.unit)
    if panel.type == "traces":
        return charts.traces(frame)
    return charts.table(frame, panel.unit)


def panel_html(result: PanelResult, run: DashboardRun) -> str:
    """One panel: title, drawing (or error), and its expanded SQL for whoever wants to rerun it."""
    body, drawn = draw_panel(result, run)
    panel = result.panel
    classes = "panel" + ("" if drawn or result.error else " empty")
    rows = len(result.frame.rows) if result.frame else 0
    return (
        f'<section class="{classes}" style="grid-column:span {max(1, min(panel.w, 24))}" '
        f'data-panel="{escape(run.dashboard.uid)}/{panel.id}" data-type="{escape(panel.type)}" '
        f'data-rows="{rows}" data-drawn="{drawn}" data-error="{int(bool(result.error))}">'
        f"<h3>{escape(panel.title)}</h3><div class=\"body\">{body}</div>"
        f"<details><summary>SQL</summary><pre>{escape(result.sql)}</pre></details></section>"
    )


def dashboard_html(run: DashboardRun) -> str:
    """One dashboard's section of the page."""
    errors = "".join(f'<p class="error">{escape(e)}</p>' for e in run.errors)
    panels = "".join(panel_html(result, run) for result in run.panels)
    return (
        f'<h2 id="{escape(run.dashboard.uid)}">{escape(run.dashboard.title)}</h2>'
        f"<p>{escape(run.dashboard.description)}</p>{errors}<div class=\"grid\">{panels}</div>"
    )


def page_html(runs: Sequence[DashboardRun], time_range: TimeRange, title: str = "gatewatch report") -> str:
    """The whole self-contained page."""
    nav = "".join(f'<a href="#{escape(r.dashboard.uid)}">{escape(r.dashboard.title)}</a>' for r in runs)
    span = f"{time_range.start:%Y-%m-%d %H:%M:%S} to {time_range.end:%Y-%m-%d %H:%M:%S} UTC"
    sections = "".join(dashboard_html(run) for run in runs)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
        f"<body><header><h1>{escape(title)}</h1><p>{escape(span)}</p><nav>{nav}</nav></header>"
        f"{sections}<script>{SCRIPT}</script></body></html>"
    )


def run_all(
    store: Client,
    database: str,
    time_range: TimeRange,
    variables: Mapping[str, Sequence[str]] | None = None,
    dashboards: Sequence[Dashboard] | None = None,
) -> list[DashboardRun]:
    """Run every dashboard (default: the shipped JSON) against one database."""
    constants = {"database": database}
    shown = dashboards or load_dashboards(DASHBOARD_DIR)
    return [run_dashboard(store, d, time_range, variables, constants) for d in shown]


def render_report(
    settings: Settings,
    store: Client,
    out_path: Path | str,
    time_range: TimeRange | None = None,
    variables: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write the HTML report of every dashboard for `time_range` (default: the last hour)."""
    window = time_range or TimeRange.last(DEFAULT_RANGE)
    html = page_html(run_all(store, settings.database, window, variables), window)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
