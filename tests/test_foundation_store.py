"""The store: migrations on real chDB through clickhouse-connect, and the exporter's layout."""

from __future__ import annotations

import pytest

from gatewatch.errors import ConfigError
from gatewatch.store import check_dsn, connect, redact
from pipelines.migrate import available_migrations, migrate, statements, status, template_values
from tests.conftest import STORE_DSN

# The OpenTelemetry Collector ClickHouse exporter's otel_traces columns, as `system.columns` shows them.
EXPORTER_COLUMNS = [
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
]


def columns(client, database: str, table: str) -> list[tuple[str, str]]:
    return [
        (name, type_)
        for name, type_ in client.query(
            "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s ORDER BY position",
            parameters={"db": database, "t": table},
        ).result_rows
    ]


def test_otel_traces_has_the_exporter_layout(store, settings):
    assert columns(store, settings.database, "otel_traces") == EXPORTER_COLUMNS
    assert columns(store, settings.database, "otel_traces_trace_id_ts") == [
        ("TraceId", "String"), ("Start", "DateTime"), ("End", "DateTime"),
    ]
    tables = {
        row[0]
        for row in store.query(
            "SELECT name FROM system.tables WHERE database = %(db)s", parameters={"db": settings.database}
        ).result_rows
    }
    assert {"otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv",
            "decisions", "alerts", "ground_truth", "schema_migrations"} <= tables


def test_migrations_are_idempotent(store, settings):
    def schema() -> list[tuple]:
        return store.query(
            "SELECT name, create_table_query FROM system.tables WHERE database = %(db)s ORDER BY name",
            parameters={"db": settings.database},
        ).result_rows

    before = schema()
    assert migrate(store, settings) == []  # the fixture already migrated: nothing pending
    assert schema() == before
    assert all(entry.applied for entry in status(store, settings))


def test_write_and_read_otel_traces_through_clickhouse_connect(store, settings):
    store.insert(
        f"{settings.database}.otel_traces",
        [["2026-01-01 00:00:00.000000001", "ab" * 16, "cd" * 8, "", "gateway", "Server", "SPAN_KIND_SERVER",
          {"http.route": "/x"}, 1500]],
        column_names=["Timestamp", "TraceId", "SpanId", "ParentSpanId", "ServiceName", "SpanName", "SpanKind",
                      "SpanAttributes", "Duration"],
    )
    rows = store.query(
        f"SELECT ServiceName, SpanAttributes['http.route'], Duration FROM {settings.database}.otel_traces"
    )
    assert rows.result_rows == [("gateway", "/x", 1500)]
    lookup = store.query(f"SELECT TraceId FROM {settings.database}.otel_traces_trace_id_ts").result_rows
    assert lookup == [("ab" * 16,)]


def test_ttl_and_cluster_render(settings):
    core = available_migrations()[0]
    with_ttl = statements(core, template_values(settings.model_copy(update={"traces_ttl_days": 7})))
    assert "TTL toDateTime(Timestamp) + toIntervalDay(7)" in with_ttl[0]
    clustered = statements(core, template_values(settings.model_copy(update={"cluster": "prod"})))
    assert "ReplicatedMergeTree()" in clustered[0] and "ON CLUSTER prod" in clustered[0]
    assert any("ENGINE = Distributed(prod" in s for s in clustered)
    single = statements(core, template_values(settings))
    assert not any("Distributed" in s for s in single)


@pytest.mark.parametrize(
    ("dsn", "message"),
    [("mysql://x", "unknown scheme"), ("http://", "no host"), ("http://h:notaport/db", "invalid port"),
     ("chdb://", "no location")],
)
def test_malformed_dsn_is_one_clear_error(dsn, message):
    with pytest.raises(ConfigError, match=message):
        check_dsn(dsn)


def test_redact_hides_password():
    assert redact("http://user:s3cret@h:8123/db") == "http://user:***@h:8123/db"


def test_connect_reuses_the_process_store():
    assert connect(STORE_DSN).query("SELECT 1").result_rows == [(1,)]
