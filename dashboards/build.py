"""Generate the Grafana dashboard JSON in dashboards/grafana/ from dashboards/spec.py.

Uses grafana-foundation-sdk (a dev dependency): `python -m dashboards.build` rewrites the files,
`python -m dashboards.build --check` fails if the committed JSON is stale (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from dashboards.spec import DASHBOARDS, DATASOURCE_TYPE, DATASOURCE_UID, DashboardSpec, PanelSpec, VariableSpec

OUT_DIR = Path(__file__).parent / "grafana"
# sqlutil.FormatQueryOption of the plugin's backend: time series, table, traces.
FORMATS = {"timeseries": 0, "table": 1, "traces": 3}
PLUGIN_VERSION = "4.10.1"


class _Raw:
    """A JSON object the SDK embeds as-is (the SDK has no ClickHouse query type)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def to_json(self) -> dict[str, Any]:
        return self.payload


class ClickHouseQuery:
    """A grafana-clickhouse-datasource SQL query, usable wherever the SDK takes a query builder."""

    def __init__(self, sql: str, query_type: str, ref_id: str = "A") -> None:
        self.sql, self.query_type, self.ref_id = sql, query_type, ref_id

    def build(self) -> _Raw:
        return _Raw({
            "datasource": datasource_ref(),
            "editorType": "sql",
            "format": FORMATS[self.query_type],
            "pluginVersion": PLUGIN_VERSION,
            "queryType": self.query_type,
            "rawSql": self.sql,
            "refId": self.ref_id,
        })


def datasource_ref() -> dict[str, str]:
    """The provisioned ClickHouse datasource, by uid."""
    return {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}


def _sdk_datasource() -> Any:
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


def panel_builder(spec: PanelSpec) -> Any:
    """The SDK builder for one panel, with its query attached."""
    from grafana_foundation_sdk.builders import barchart, dashboard, stat, table, timeseries
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.models import common

    if spec.kind == "timeseries":
        builder: Any = (
            timeseries.Panel().fill_opacity(10).span_nulls(True)
            .show_points(common.VisibilityMode.NEVER)
        )
    elif spec.kind == "stat":
        builder = stat.Panel().graph_mode(common.BigValueGraphMode.NONE).reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
    elif spec.kind == "table":
        builder = table.Panel()
    elif spec.kind == "barchart":
        builder = barchart.Panel().x_field(spec.columns[0]).show_value(common.VisibilityMode.AUTO)
    elif spec.kind == "traces":
        builder = dashboard.Panel().type("traces")
    else:
        raise ValueError(f"unknown panel kind {spec.kind!r}")
    builder = builder.title(spec.title).datasource(_sdk_datasource())
    builder = builder.with_target(cast(Any, ClickHouseQuery(spec.sql, spec.query_type)))
    if spec.description:
        builder = builder.description(spec.description)
    if spec.min_interval:
        builder = builder.interval(spec.min_interval)
    if spec.unit and hasattr(builder, "unit"):
        builder = builder.unit(spec.unit)
    return builder


def variable_builder(spec: VariableSpec) -> Any:
    """The SDK builder for one dashboard variable."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.models.dashboard import VariableHide, VariableOption, VariableRefresh, VariableSort

    if spec.kind == "constant":
        return dashboard.ConstantVariable(spec.name).value(spec.value)
    if spec.kind == "textbox":
        return dashboard.TextBoxVariable(spec.name).label(spec.label).default_value(spec.value)
    if spec.kind == "query":
        return (
            dashboard.QueryVariable(spec.name).label(spec.label).datasource(_sdk_datasource())
            .query(spec.sql).include_all(True).multi(True)
            .current(VariableOption(selected=True, text="All", value="$__all"))
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .hide(VariableHide.DONT_HIDE)
        )
    raise ValueError(f"unknown variable kind {spec.kind!r}")


def dashboard_json(spec: DashboardSpec) -> dict[str, Any]:
    """The Grafana dashboard model of one spec, as JSON-ready data."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    builder = (
        dashboard.Dashboard(spec.title).uid(spec.uid).tags(list(spec.tags)).description(spec.description)
        .time("now-1h", "now").refresh("30s").timezone("browser").editable()
    )
    for variable in spec.variables:
        builder = builder.with_variable(variable_builder(variable))
    for annotation in spec.annotations:
        target = _Raw(
            {"editorType": "sql", "format": 1, "queryType": "table", "rawSql": annotation.sql, "refId": "Anno"}
        )
        builder = builder.annotation(
            dashboard.AnnotationQuery().name(annotation.name).datasource(_sdk_datasource()).enable(True)
            .icon_color(annotation.color).target(cast(Any, _Builds(target)))
        )
    x = y = row_height = 0
    for panel_id, panel in enumerate(spec.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        builder = builder.with_panel(panel_builder(panel).id(panel_id).grid_pos(_grid(x, y, panel)))
        x, row_height = x + panel.width, max(row_height, panel.height)
    encoded = json.dumps(builder.build(), cls=JSONEncoder, sort_keys=True)
    return cast(dict[str, Any], json.loads(encoded))


class _Builds:
    """Wrap a ready JSON object as an SDK builder."""

    def __init__(self, value: _Raw) -> None:
        self.value = value

    def build(self) -> _Raw:
        return self.value


def _grid(x: int, y: int, panel: PanelSpec) -> Any:
    from grafana_foundation_sdk.models.dashboard import GridPos

    return GridPos(h=panel.height, w=panel.width, x=x, y=y)


def rendered_files() -> dict[Path, str]:
    """Every dashboard file's path and its exact text."""
    return {
        # The number keeps the reading order (Traffic first) wherever files are listed by name.
        OUT_DIR / f"{index:02d}-{spec.uid}.json": json.dumps(dashboard_json(spec), indent=2, sort_keys=True) + "\n"
        for index, spec in enumerate(DASHBOARDS, start=1)
    }


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with --check report the stale ones and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered_files().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        print("stale dashboards (run python -m dashboards.build):", *map(str, stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
