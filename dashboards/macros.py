"""Expand a panel's SQL the way Grafana + grafana-clickhouse-datasource do, so the same JSON runs here.

Three stages, in Grafana's order: the plugin's frontend `$__conditionalAll(cond, $var)`; Grafana's
template variables (`$v`, `${v}`, `${v:format}`, `[[v]]`, `$__interval`, `$__from`, ...); then the
plugin's backend macros (`$__timeFilter(col)`, `$__fromTime`, `$__toTime`, `$__timeInterval(col)`,
`$__interval_s`, ... as in its pkg/macros). A `$__` macro left over is an error, never silently kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gatewatch.errors import GatewatchError

ALL = "$__all"
# Grafana's "nice" intervals, in seconds, that an auto interval is rounded up to.
NICE_INTERVALS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class MacroError(GatewatchError):
    """A query uses a macro or variable this renderer cannot expand."""


@dataclass(frozen=True)
class TimeRange:
    """The dashboard time range, timezone-aware (UTC)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise MacroError("time range needs timezone-aware datetimes")
        if self.end <= self.start:
            raise MacroError("time range end must be after its start")

    @classmethod
    def last(cls, duration: timedelta, end: datetime | None = None) -> TimeRange:
        """The range that ends at `end` (default now) and lasts `duration`."""
        stop = end or datetime.now(UTC)
        return cls(stop - duration, stop)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class VariableValue:
    """A variable's current value(s); `is_all` when "All" is selected (values are then every option)."""

    values: tuple[str, ...]
    is_all: bool = False
    custom_all: str | None = None

    @classmethod
    def single(cls, value: str) -> VariableValue:
        return cls((value,))


@dataclass(frozen=True)
class QueryContext:
    """Everything a query's macros refer to."""

    time_range: TimeRange
    interval_s: int
    variables: Mapping[str, VariableValue]


def parse_interval(text: str) -> int:
    """Seconds of a Grafana interval such as `30s`, `1m`, `2h`, `1d` (empty: 0)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text or "0")
    if not match:
        raise MacroError(f"interval {text!r}: use a number and s, m, h or d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def auto_interval(time_range: TimeRange, max_points: int = 120, min_interval_s: int = 1) -> int:
    """Grafana's $__interval: range / max data points, rounded up to a nice step, in seconds."""
    raw = max(time_range.seconds / max(max_points, 1), min_interval_s)
    return next((step for step in NICE_INTERVALS_S if step >= raw), NICE_INTERVALS_S[-1])


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL ClickHouse would receive from Grafana for this query and context."""
    return backend_macros(interpolate(conditional_all(sql, ctx), ctx), ctx)


# --- stage 1: the plugin's $__conditionalAll ---------------------------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_REF = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")


def conditional_all(sql: str, ctx: QueryContext) -> str:
    """Replace `$__conditionalAll(cond, $var)` by `1=1` when var is All or empty, else by `cond`."""
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        args, end = macro_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            raise MacroError(f"$__conditionalAll needs 2 arguments, got {len(args)}")
        phrase = args[0]
        ref = _VAR_REF.search(args[1].strip())
        if ref:
            value = ctx.variables.get(ref.group(1) or ref.group(2))
            if value is None or value.is_all or value.values in ((), ("",)):
                phrase = "1=1"
        sql = sql[:index] + phrase + sql[end:]
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


def macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """Comma-separated arguments of the call whose `(` is at `open_paren`, and the index after `)`."""
    depth, start, args = 0, open_paren + 1, []
    quote = ""
    for pos in range(open_paren, len(sql)):
        char = sql[pos]
        if quote:
            quote = "" if char == quote and sql[pos - 1] != "\\" else quote
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:pos])
                return [arg.strip() for arg in args], pos + 1
        elif char == "," and depth == 1:
            args.append(sql[start:pos])
            start = pos + 1
    raise MacroError(f"unbalanced parentheses after {sql[max(open_paren - 20, 0):open_paren + 1]!r}")


# --- stage 2: Grafana template variables -------------------------------------------------------

_TEMPLATE = re.compile(r"\$(\w+)|\$\{(\w+)(?::([^}]+))?\}|\[\[(\w+)(?::(\w+))?\]\]")


def builtin_variables(ctx: QueryContext) -> dict[str, str]:
    """Grafana's global variables that depend on the time range and interval."""
    return {
        "__interval": format_interval(ctx.interval_s),
        "__interval_ms": str(ctx.interval_s * 1000),
        "__from": str(int(ctx.time_range.start.timestamp() * 1000)),
        "__to": str(int(ctx.time_range.end.timestamp() * 1000)),
        "__range_s": str(int(ctx.time_range.seconds)),
    }


def interpolate(sql: str, ctx: QueryContext) -> str:
    """Replace variable references; names Grafana would not know are left for the backend stage."""
    builtins = builtin_variables(ctx)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5) or ""
        if name in builtins:
            return builtins[name]
        value = ctx.variables.get(name)
        if value is None:
            return match.group(0)
        if value.is_all and value.custom_all is not None:
            return value.custom_all  # Grafana inserts a custom "All" value verbatim
        return format_value(value.values, fmt)

    return _TEMPLATE.sub(replace, sql)


def _quote_single(value: str) -> str:
    # Escaping the backslash too (Grafana does not) keeps a value ending in `\` from breaking out.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


FORMATS: dict[str, Callable[[Sequence[str]], str]] = {
    "singlequote": lambda values: ",".join(_quote_single(v) for v in values),
    "sqlstring": lambda values: ",".join("'" + v.replace("'", "''") + "'" for v in values),
    "doublequote": lambda values: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
    "csv": ",".join,
    "raw": ",".join,
    "text": ",".join,
}


def format_value(values: Sequence[str], fmt: str) -> str:
    """A variable's values in a Grafana format; without one, the plugin quotes lists and keeps scalars."""
    if fmt:
        if fmt not in FORMATS:
            raise MacroError(f"unsupported variable format :{fmt}")
        return FORMATS[fmt](values)
    if len(values) == 1:
        return values[0]
    return FORMATS["singlequote"](values)


def format_interval(seconds: int) -> str:
    """Grafana's interval text: 30s, 5m, 1h, 1d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- stage 3: the plugin's backend macros ------------------------------------------------------

_BACKEND = re.compile(r"\$__(\w+)")


def _datetime(moment: datetime) -> str:
    return f"toDateTime({int(moment.timestamp())})"


def _datetime64(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(moment.timestamp() * 1000)})"


def _date(moment: datetime) -> str:
    return f"toDate('{moment.astimezone(UTC):%Y-%m-%d}')"


def _between(column: str, low: str, high: str) -> str:
    return f"{column} >= {low} AND {column} <= {high}"


def _one(name: str, args: list[str]) -> str:
    if len(args) != 1 or not args[0]:
        raise MacroError(f"$__{name} expects 1 argument, received {len(args)}")
    return args[0]


def _date_time_filter(name: str, args: list[str], r: TimeRange) -> str:
    if len(args) != 2:
        raise MacroError(f"$__{name} expects 2 arguments, received {len(args)}")
    dates = _between(args[0], _date(r.start), _date(r.end))
    times = _between(args[1], _datetime(r.start), _datetime(r.end))
    return f"({dates}) AND ({times})"


MacroFn = Callable[[str, list[str], QueryContext], str]
BACKEND_MACROS: dict[str, MacroFn] = {
    "fromTime": lambda n, a, c: _datetime(c.time_range.start),
    "toTime": lambda n, a, c: _datetime(c.time_range.end),
    "fromTime_ms": lambda n, a, c: _datetime64(c.time_range.start),
    "toTime_ms": lambda n, a, c: _datetime64(c.time_range.end),
    "timeFilter": lambda n, a, c: _between(_one(n, a), _datetime(c.time_range.start), _datetime(c.time_range.end)),
    "timeFilter_ms": lambda n, a, c: _between(
        _one(n, a), _datetime64(c.time_range.start), _datetime64(c.time_range.end)
    ),
    "dateFilter": lambda n, a, c: _between(_one(n, a), _date(c.time_range.start), _date(c.time_range.end)),
    "dateTimeFilter": lambda n, a, c: _date_time_filter(n, a, c.time_range),
    "dt": lambda n, a, c: _date_time_filter(n, a, c.time_range),
    "timeInterval": lambda n, a, c: (
        f"toStartOfInterval(toDateTime({_one(n, a)}), INTERVAL {max(c.interval_s, 1)} second)"
    ),
    "timeInterval_ms": lambda n, a, c: (
        f"toStartOfInterval(toDateTime64({_one(n, a)}, 3), INTERVAL {max(c.interval_s, 1) * 1000} millisecond)"
    ),
    "interval_s": lambda n, a, c: str(max(c.interval_s, 1)),
}


def backend_macros(sql: str, ctx: QueryContext) -> str:
    """Expand the plugin's `$__name` / `$__name(args)` macros; unknown ones raise MacroError."""
    out, pos = [], 0
    for match in _BACKEND.finditer(sql):
        if match.start() < pos:
            continue  # inside the arguments of a macro already expanded
        name = match.group(1)
        if name not in BACKEND_MACROS:
            raise MacroError(f"unknown macro $__{name}")
        end, args = match.end(), list[str]()
        if end < len(sql) and sql[end] == "(":
            args, end = macro_args(sql, end)
        out.append(sql[pos:match.start()])
        out.append(BACKEND_MACROS[name](name, args, ctx))
        pos = end
    out.append(sql[pos:])
    return "".join(out)
