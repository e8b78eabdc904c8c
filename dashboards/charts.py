"""Draw panels as self-contained HTML: inline SVG for time series, bars and traces, tables and stats.

Every drawer returns (html, marks): `marks` counts what was drawn (points, bars, rows, spans), so
a page can say which panels showed data.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from dashboards.macros import TimeRange
from dashboards.query import Frame

PALETTE = ("#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#FADE2A", "#96D98D",
           "#FFA6B0")
WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 640, 220, 56, 12, 10, 24
Mark = tuple[datetime, str, str]  # time, text, colour


def is_time(type_name: str) -> bool:
    return type_name.removeprefix("Nullable(").startswith(("DateTime", "Date"))


def is_number(type_name: str) -> bool:
    return type_name.removeprefix("Nullable(").startswith(("Int", "UInt", "Float", "Decimal"))


def as_utc(value: Any) -> datetime:
    """A datetime from ClickHouse (naive means UTC) or epoch milliseconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value) / 1000, tz=UTC)


def format_value(value: Any, unit: str = "") -> str:
    """A number as a person reads it, in the panel's unit."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return as_utc(value).strftime("%Y-%m-%d %H:%M:%S")
    if not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    text = f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:,.3g}"
    suffix = {"reqps": " req/s", "ms": " ms"}.get(unit, "")
    return text + suffix


def wide_series(frame: Frame) -> dict[str, list[tuple[datetime, float]]]:
    """Grafana's long-to-wide: string columns label a series, each numeric column is a value."""
    time_index = next((i for i, t in enumerate(frame.types) if is_time(t)), None)
    if time_index is None:
        return {}
    labels = [i for i, t in enumerate(frame.types) if i != time_index and not is_number(t)]
    values = [i for i, t in enumerate(frame.types) if i != time_index and is_number(t)]
    series: dict[str, list[tuple[datetime, float]]] = {}
    for row in frame.rows:
        label = " ".join(str(row[i]) for i in labels)
        for i in values:
            if row[i] is None:
                continue
            name = label if label and len(values) == 1 else f"{frame.columns[i]} {label}".strip()
            series.setdefault(name, []).append((as_utc(row[time_index]), float(row[i])))
    return series


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= value)


def _legend(names: Sequence[str], chart_id: str) -> str:
    items = "".join(
        f'<li data-series="{escape(chart_id)}-{i}"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>'
        f"{escape(name)}</li>"
        for i, name in enumerate(names)
    )
    return f'<ul class="legend">{items}</ul>'


def timeseries(frame: Frame, time_range: TimeRange, unit: str, marks: Sequence[Mark], chart_id: str) -> tuple[str, int]:
    """Lines over the dashboard's time range, with annotation marks as dashed verticals."""
    series = wide_series(frame)
    top = _nice_max(max((v for points in series.values() for _, v in points), default=0.0))
    span = time_range.seconds
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def x(moment: datetime) -> float:
        return PAD_L + plot_w * (moment - time_range.start).total_seconds() / span

    def y(value: float) -> float:
        return PAD_T + plot_h * (1 - value / top)

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart">']
    for step in range(5):
        value = top * step / 4
        parts.append(f'<line class="grid" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>')
        parts.append(f'<text class="axis" x="{PAD_L - 4}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f"{escape(format_value(value, unit))}</text>")
    for step in range(5):
        moment = time_range.start + (time_range.end - time_range.start) * step / 4
        parts.append(f'<text class="axis" x="{x(moment):.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                     f"{moment:%H:%M}</text>")
    drawn = 0
    for i, (name, points) in enumerate(series.items()):
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in sorted(points))
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<polyline class="series" data-series="{escape(chart_id)}-{i}" points="{coords}" '
                     f'stroke="{color}"><title>{escape(name)}</title></polyline>')
        if len(points) == 1:
            t, v = points[0]
            parts.append(f'<circle class="series" data-series="{escape(chart_id)}-{i}" cx="{x(t):.1f}" '
                         f'cy="{y(v):.1f}" r="3" fill="{color}"/>')
        drawn += len(points)
    for moment, text, color in marks:
        if time_range.start <= moment <= time_range.end:
            parts.append(f'<line class="mark" x1="{x(moment):.1f}" x2="{x(moment):.1f}" y1="{PAD_T}" '
                         f'y2="{HEIGHT - PAD_B}" stroke="{color}"><title>{escape(text)}</title></line>')
    parts.append("</svg>")
    return "".join(parts) + _legend(list(series), chart_id), drawn


def barchart(frame: Frame, unit: str) -> tuple[str, int]:
    """Horizontal bars: the first text column names a row, each numeric column is one bar."""
    label_index = next((i for i, t in enumerate(frame.types) if not is_number(t)), 0)
    values = [i for i, t in enumerate(frame.types) if is_number(t)]
    top = _nice_max(max((float(row[i] or 0) for row in frame.rows for i in values), default=0.0))
    bar_h, gap, label_w = 9, 6, 150
    height = max(len(frame.rows) * (bar_h * len(values) + gap) + gap, 20)
    parts = [f'<svg viewBox="0 0 {WIDTH} {height}" class="chart bars">']
    drawn = 0
    for r, row in enumerate(frame.rows):
        top_y = gap + r * (bar_h * len(values) + gap)
        parts.append(f'<text class="axis" x="{label_w - 6}" y="{top_y + bar_h * len(values) / 2 + 4:.1f}" '
                     f'text-anchor="end">{escape(str(row[label_index]))[:28]}</text>')
        for k, i in enumerate(values):
            value = float(row[i] or 0)
            width = (WIDTH - label_w - 70) * value / top
            parts.append(f'<rect class="bar" x="{label_w}" y="{top_y + k * bar_h}" width="{width:.1f}" '
                         f'height="{bar_h - 1}" fill="{PALETTE[k % len(PALETTE)]}">'
                         f"<title>{escape(frame.columns[i])}: {escape(format_value(row[i], unit))}</title></rect>")
            parts.append(f'<text class="axis" x="{label_w + width + 4:.1f}" y="{top_y + k * bar_h + bar_h - 1}">'
                         f"{escape(format_value(row[i], unit))}</text>")
            drawn += 1
    parts.append("</svg>")
    return "".join(parts) + _legend([frame.columns[i] for i in values], "bars"), drawn


def table(frame: Frame, unit: str, max_rows: int = 50) -> tuple[str, int]:
    """An HTML table of the first rows."""
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(v, t, unit))}</td>" for v, t in zip(row, frame.types, strict=True))
        + "</tr>"
        for row in frame.rows[:max_rows]
    )
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>', min(
        len(frame.rows), max_rows
    )


def _cell(value: Any, type_name: str, unit: str) -> str:
    if isinstance(value, float) and unit == "percentunit":
        return format_value(value, unit)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return format_value(value, "")


def stat(frame: Frame, unit: str) -> tuple[str, int]:
    """Big numbers: each numeric column of the first row."""
    if not frame.rows:
        return "", 0
    row = frame.rows[0]
    items = "".join(
        f'<div class="stat"><b>{escape(format_value(row[i], unit))}</b><span>{escape(name)}</span></div>'
        for i, name in enumerate(frame.columns)
        if is_number(frame.types[i])
    )
    return f'<div class="stats">{items}</div>', sum(1 for t in frame.types if is_number(t))


def traces(frame: Frame) -> tuple[str, int]:
    """A trace waterfall: one bar per span, indented by depth, red when its status is Error."""
    if not frame.rows or "spanID" not in frame.columns:
        return "", 0
    spans = [dict(zip(frame.columns, row, strict=True)) for row in frame.rows]
    parents = {s["spanID"]: s["parentSpanID"] for s in spans}

    def depth(span_id: str) -> int:
        level, seen = 0, set()
        while parents.get(span_id) in parents and span_id not in seen:
            seen.add(span_id)
            span_id, level = parents[span_id], level + 1
        return level

    begin = min(float(s["startTime"]) for s in spans)
    total = max(float(s["startTime"]) + float(s["duration"]) for s in spans) - begin or 1.0
    row_h, label_w = 16, 230
    parts = [f'<svg viewBox="0 0 {WIDTH} {len(spans) * row_h + 4}" class="chart trace">']
    for r, span in enumerate(spans[:200]):
        level = depth(span["spanID"])
        x = label_w + (WIDTH - label_w - 60) * (float(span["startTime"]) - begin) / total
        width = max((WIDTH - label_w - 60) * float(span["duration"]) / total, 1.0)
        service_color = PALETTE[zlib.crc32(str(span["serviceName"]).encode()) % 6]
        color = "#F2495C" if span.get("statusCode") == "Error" else service_color
        label = f"{span['serviceName']}: {span['operationName']}"
        parts.append(f'<text class="axis" x="{4 + level * 10}" y="{r * row_h + 12}">{escape(label)[:34]}</text>')
        parts.append(f'<rect class="span" x="{x:.1f}" y="{r * row_h + 3}" width="{width:.1f}" height="{row_h - 5}" '
                     f'fill="{color}"><title>{escape(label)} {float(span["duration"]):.2f} ms</title></rect>')
        parts.append(f'<text class="axis" x="{x + width + 3:.1f}" y="{r * row_h + 12}">'
                     f'{float(span["duration"]):.1f} ms</text>')
    parts.append("</svg>")
    return "".join(parts), min(len(spans), 200)
