"""Grafana + grafana-clickhouse-datasource macro expansion, as the local renderer does it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboards.macros import (
    MacroError,
    QueryContext,
    TimeRange,
    VariableValue,
    auto_interval,
    expand,
)

START = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
RANGE = TimeRange(START, START + timedelta(hours=1))
FROM, TO = int(RANGE.start.timestamp()), int(RANGE.end.timestamp())


def ctx(**variables: VariableValue) -> QueryContext:
    return QueryContext(RANGE, 30, variables)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(Timestamp)", f"Timestamp >= toDateTime({FROM}) AND Timestamp <= toDateTime({TO})"),
        ("$__timeFilter_ms(t)", f"t >= fromUnixTimestamp64Milli({FROM}000) AND t <= fromUnixTimestamp64Milli({TO}000)"),
        ("x > $__fromTime AND x < $__toTime", f"x > toDateTime({FROM}) AND x < toDateTime({TO})"),
        ("$__fromTime_ms", f"fromUnixTimestamp64Milli({FROM}000)"),
        ("$__dateFilter(d)", "d >= toDate('2025-03-01') AND d <= toDate('2025-03-01')"),
        ("$__dt(d, t)", f"(d >= toDate('2025-03-01') AND d <= toDate('2025-03-01')) AND "
                        f"(t >= toDateTime({FROM}) AND t <= toDateTime({TO}))"),
        ("$__timeInterval(Timestamp)", "toStartOfInterval(toDateTime(Timestamp), INTERVAL 30 second)"),
        ("$__timeInterval_ms(ts)", "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 30000 millisecond)"),
        ("count() / $__interval_s", "count() / 30"),
        ("'$__interval' $__interval_ms $__from $__to", f"'30s' 30000 {FROM}000 {TO}000"),
    ],
)
def test_plugin_and_grafana_macros(sql: str, expected: str):
    assert expand(sql, ctx()) == expected


def test_variables_in_every_syntax_and_format():
    c = ctx(db=VariableValue.single("gw"), route=VariableValue(("GET /a", "it's")))
    assert expand("${db}.t $db.t [[db]].t", c) == "gw.t gw.t gw.t"
    assert expand("IN (${route:singlequote})", c) == "IN ('GET /a','it\\'s')"
    assert expand("IN (${route:sqlstring})", c) == "IN ('GET /a','it''s')"
    assert expand("${route:csv}", c) == "GET /a,it's"
    assert expand("IN ($route)", c) == "IN ('GET /a','it\\'s')"  # the plugin quotes lists by default


def test_singlequote_cannot_be_escaped_with_a_trailing_backslash():
    assert expand("x = ${v:singlequote}", ctx(v=VariableValue.single("a\\"))) == "x = 'a\\\\'"


def test_conditional_all_drops_the_condition_for_all_or_empty():
    sql = "WHERE $__conditionalAll(route IN (${route:singlequote}), $route) AND 1"
    assert expand(sql, ctx(route=VariableValue(("a", "b"), is_all=True))) == "WHERE 1=1 AND 1"
    assert expand(sql, ctx(route=VariableValue(("",)))) == "WHERE 1=1 AND 1"
    assert expand(sql, ctx(route=VariableValue.single("a"))) == "WHERE route IN ('a') AND 1"


def test_custom_all_value_is_inserted_verbatim():
    c = ctx(route=VariableValue(("a",), is_all=True, custom_all=".*"))
    assert expand("match(r, '${route:raw}')", c) == "match(r, '.*')"


def test_unknown_macros_and_bad_arguments_are_errors():
    with pytest.raises(MacroError, match="unknown macro"):
        expand("$__nope(x)", ctx())
    with pytest.raises(MacroError, match="expects 1 argument"):
        expand("$__timeFilter()", ctx())
    with pytest.raises(MacroError, match="unbalanced"):
        expand("$__timeFilter(Timestamp", ctx())
    with pytest.raises(MacroError, match="format"):
        expand("${v:nosuch}", ctx(v=VariableValue.single("x")))


def test_unknown_variables_are_left_for_the_backend_which_rejects_them():
    assert expand("'$notavar'", ctx()) == "'$notavar'"


def test_auto_interval_rounds_up_to_nice_steps():
    assert auto_interval(RANGE, max_points=120) == 30
    assert auto_interval(TimeRange(START, START + timedelta(minutes=5)), max_points=1000) == 1
    assert auto_interval(TimeRange(START, START + timedelta(days=30)), max_points=10) == 86400


def test_time_range_needs_timezone_and_order():
    with pytest.raises(MacroError):
        TimeRange(datetime(2025, 1, 1), datetime(2025, 1, 2))
    with pytest.raises(MacroError):
        TimeRange(START, START)
