"""Pipeline throughput: spans/s (wall) and spans per CPU-second (per core) from Kafka into chDB.

Stages measured separately to show where time goes. The pipeline's path: validate (upb parse), then
ClickHouse maps the raw protobuf itself (INSERT ... SELECT FROM file(Protobuf), pipelines.sqlmap);
the Python fallback path: OTLP decode -> columns, columns -> Native bytes, Native insert. Both inserts
include parts, indexes and the three materialized views. Then the whole Kafka -> ClickHouse path
through PipelineService, and (baseline, same invocation) the same with one insert per partition as
before the flush inserted every ready partition with one statement. Baseline of the inserts, same
invocation: clickhouse-connect's generic column-oriented insert of the same spans (dict maps,
LowCardinality built client-side) instead of our Native block.
Spans are gateway-like with 10 span attributes. Set GATEWATCH_KAFKA for the end-to-end row.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatewatch.settings import Settings
from gatewatch.spanlog import KafkaLog, Message
from gatewatch.store import connect
from gatewatch.topics import ensure_topics, topic_specs
from pipelines import service as pipeline_service
from pipelines.columns import INSERT_COLUMNS, SpanColumns
from pipelines.decode import decode_into
from pipelines.migrate import migrate
from pipelines.pipeline import Pipeline
from pipelines.rawspans import RawSpans
from pipelines.service import PipelineService
from pipelines.synthetic import synthetic_request
from pipelines.writer import ClickHouseWriter

SPANS_PER_MESSAGE = 500
MESSAGES = int(os.environ.get("BENCH_PIPELINE_MESSAGES", "1000"))  # 500k spans: several batches, merges included
BATCH = int(os.environ.get("BENCH_PIPELINE_BATCH", "100000"))
RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"


def settled(store) -> None:
    """Wait (bounded) until chDB runs no merge: a phase's background merges must not bill the next phase."""
    time.sleep(0.3)  # a merge is scheduled shortly after the insert that calls for it
    deadline = time.monotonic() + 60
    while store.command("SELECT count() FROM system.merges") and time.monotonic() < deadline:
        time.sleep(0.1)


def timed(store, spans: int, work: Callable[[], object]) -> dict[str, float]:
    """Run `work` once; spans/s on the wall clock and per CPU-second of this process (all threads).

    chDB runs in this process, so its merges count too: earlier phases' merges are waited out
    first, and the merges `work` itself starts are counted until it returns.
    """
    settled(store)
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"spans": spans, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "spans_per_s": round(spans / wall), "spans_per_cpu_s": round(spans / max(cpu, 1e-9))}


def batches(messages: list[bytes]) -> list[SpanColumns]:
    out, current = [], SpanColumns()
    for message in messages:
        decode_into(message, current)
        if len(current) >= BATCH:
            out.append(current)
            current = SpanColumns()
    return [*out, current] if len(current) else out


def raw_batches(messages: list[bytes]) -> list[RawSpans]:
    out, current = [], RawSpans()
    for offset, message in enumerate(messages):
        current.add(Message(message, offset=offset))
        if len(current) >= BATCH:
            out.append(current)
            current = RawSpans()
    return [*out, current] if len(current) else out


def total(results: dict[str, dict[str, float]], stages: list[str], spans: int) -> dict[str, float]:
    """Spans/s of stages run one after another."""
    return {"spans": spans, "spans_per_cpu_s": round(spans / sum(results[k]["cpu_s"] for k in stages)),
            "spans_per_s": round(spans / sum(results[k]["wall_s"] for k in stages))}


def generic_rows(columns: SpanColumns) -> list[list]:
    """The same batch as clickhouse-connect's generic insert wants it (column-oriented, dict maps)."""
    def maps(column, rows: int) -> list[dict]:
        offsets = [0, *column.offsets]
        return [dict(zip(column.keys[offsets[i]:offsets[i + 1]], column.values[offsets[i]:offsets[i + 1]],
                         strict=True)) for i in range(rows)]

    n = len(columns)
    empty: list[list] = [[] for _ in range(n)]
    return [
        list(columns.timestamps), columns.trace_ids, columns.span_ids, columns.parent_span_ids, columns.trace_states,
        columns.span_names, columns.span_kinds, columns.service_names, maps(columns.resource_attributes, n),
        columns.scope_names, columns.scope_versions, maps(columns.span_attributes, n), list(columns.durations),
        columns.status_codes, columns.status_messages, empty, empty, empty, empty, empty, empty, empty,
    ]


class PerPartitionPipeline(Pipeline):
    """The pipeline without a log reader: it then inserts each partition's batch on its own."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "read_range": None})


def end_to_end(
    settings: Settings, messages: list[bytes], spans: int, store
) -> tuple[dict[str, float], dict[str, float]]:
    ensure_topics(settings.kafka, topic_specs(settings))
    producer = KafkaLog(settings.kafka).producer(settings.spans_topic)
    for start in range(0, len(messages), 50):
        producer.send([Message(m, key=uuid.uuid4().bytes) for m in messages[start:start + 50]], timeout_s=60)
    producer.close()
    service = PipelineService(settings, store=store, metrics_port=None)
    # Startup (migrations, topic checks, joining the group) is a one-off cost: timed on its own row.
    startup = timed(store, spans, service.start)

    def run() -> None:
        deadline = time.monotonic() + 120
        while service.metrics.rows_written._value.get() < spans and time.monotonic() < deadline:
            time.sleep(0.02)
        service.stop()

    return startup, timed(store, spans, run)


def per_partition_end_to_end(settings: Settings, messages: list[bytes], spans: int, store) -> dict[str, float]:
    """end_to_end with the pipeline class swapped for the one-insert-per-partition baseline."""
    # misc: mypy refuses assignments to a class name; this one swaps the class PipelineService builds
    pipeline_service.Pipeline = PerPartitionPipeline  # type: ignore[misc]
    try:
        return end_to_end(settings, messages, spans, store)[1]
    finally:
        pipeline_service.Pipeline = Pipeline  # type: ignore[misc]  # restored, as above


def stage_results(settings: Settings, store, messages: list[bytes], spans: int) -> dict[str, dict[str, float]]:
    """Each stage on its own: validate, SQL-mapped insert, Python decode, Native encode and insert, baseline."""
    results: dict[str, dict[str, float]] = {}
    raw: list[RawSpans] = []
    results["validate (upb parse)"] = timed(store, spans, lambda: raw.extend(raw_batches(messages)))
    sql_writer = ClickHouseWriter(store, settings.database)

    def insert_sql() -> None:
        for i, r in enumerate(raw):
            sql_writer.write(r, f"bench/sql/{i}")

    results["insert (SQL-mapped protobuf)"] = timed(store, spans, insert_sql)
    results["validate + SQL insert"] = total(results, ["validate (upb parse)", "insert (SQL-mapped protobuf)"], spans)
    decoded: list[SpanColumns] = []
    results["decode (OTLP -> columns)"] = timed(store, spans, lambda: decoded.extend(batches(messages)))
    payloads: list[tuple[list[str], bytes]] = []
    results["encode (columns -> Native)"] = timed(store, spans, lambda: payloads.extend(c.native() for c in decoded))
    writer = ClickHouseWriter(store, settings.database)

    def insert_native() -> None:
        for i, c in enumerate(decoded):
            writer.write(c, f"bench/{i}")

    results["insert only (Native, ours)"] = timed(store, spans, insert_native)
    rows = [generic_rows(c) for c in decoded]
    results["baseline: generic insert"] = timed(store, spans, lambda: [
        store.insert(f"{settings.database}.otel_traces", r, column_names=list(INSERT_COLUMNS), column_oriented=True)
        for r in rows
    ])
    results["decode + encode + insert"] = total(
        results, ["decode (OTLP -> columns)", "encode (columns -> Native)", "insert only (Native, ours)"], spans
    )
    return results


def main() -> int:
    messages = [synthetic_request(SPANS_PER_MESSAGE, seed) for seed in range(MESSAGES)]
    spans = MESSAGES * SPANS_PER_MESSAGE
    store_dir = tempfile.mkdtemp(prefix="gatewatch-bench-pipeline-")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka=os.environ.get("GATEWATCH_KAFKA", ""), clickhouse=f"chdb://{store_dir}", database=f"bench_{tag}",
        spans_topic=f"bench_spans_{tag}", dlq_topic=f"bench_spans_{tag}.dlq", pipeline_group=f"bench-{tag}",
        pipeline_batch_rows=BATCH,
    )
    store = connect(settings.clickhouse)
    migrate(store, settings)
    results = stage_results(settings, store, messages, spans)
    # The stages' decoded batches are gone now: the cyclic GC no longer walks millions of their
    # objects while the pipeline runs, as it would not in a pipeline process.
    gc.collect()
    if settings.kafka:
        e2e_settings = settings.model_copy(update={"database": f"bench_e2e_{tag}"})
        startup, steady = end_to_end(e2e_settings, messages, spans, store)
        results["Kafka -> pipeline -> chDB"] = steady
        results["  (+ startup, as spans/s)"] = startup
        base_tag = f"{tag}_pp"
        base_settings = settings.model_copy(update={
            "database": f"bench_e2e_{base_tag}", "spans_topic": f"bench_spans_{base_tag}",
            "dlq_topic": f"bench_spans_{base_tag}.dlq", "pipeline_group": f"bench-{base_tag}",
        })
        results["baseline: 1 insert/partition"] = per_partition_end_to_end(base_settings, messages, spans, store)
    print(f"pipeline benchmark: {spans} spans, {SPANS_PER_MESSAGE} per message, 10 attributes per span, "
          f"batches of {BATCH}, {os.cpu_count()} CPUs (shared)")
    print(f"{'stage':32} {'spans/s (wall)':>15} {'spans/CPU-s':>13}")
    for name, row in results.items():
        print(f"{name:32} {row['spans_per_s']:>15,} {row['spans_per_cpu_s']:>13,}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"spans": spans, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
