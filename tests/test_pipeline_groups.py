"""Several partitions in one insert: a crash, then a rebalance that splits them, stores each span once."""

from __future__ import annotations

import time

import pytest

from gatewatch.settings import Settings
from gatewatch.spanlog import EmbeddedLog, KafkaLog, LogConsumer, Message, TopicPartition
from pipelines.dlq import DeadLetters
from pipelines.ledger import BatchLedger, OffsetRange
from pipelines.metrics import PipelineMetrics
from pipelines.pipeline import Pipeline
from pipelines.synthetic import synthetic_request
from pipelines.writer import ClickHouseWriter

PARTITIONS, PER_PARTITION, SPANS = 3, 4, 50


class Crash(BaseException):
    """A process dying (BaseException: the pipeline's retries must not swallow it)."""


class PartitionedLog:
    """A three-partition topic with one committed offset per partition, shared by the fake consumers."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.messages = {
            p: [Message(synthetic_request(SPANS, p * 100 + i), None, (), topic, p, i) for i in range(PER_PARTITION)]
            for p in range(PARTITIONS)
        }
        self.committed = dict.fromkeys(range(PARTITIONS), 0)

    def read(self, r: OffsetRange) -> list[Message]:
        return self.messages[r.partition][r.first : r.last + 1]


class Consumer(LogConsumer):
    """Owns some partitions; each poll hands out two messages of every owned partition."""

    def __init__(self, log: PartitionedLog, owned: list[int]) -> None:
        self._log, self._owned = log, owned
        self._position = {p: log.committed[p] for p in owned}

    def poll(self, max_messages: int = 10_000, timeout_s: float = 1.0) -> list[Message]:
        out = []
        for p in self._owned:
            out += self._log.messages[p][self._position[p] : self._position[p] + 2]
            self._position[p] = min(self._position[p] + 2, PER_PARTITION)
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for (_, p), offset in offsets.items():
            self._log.committed[p] = max(self._log.committed[p], offset)

    def lag(self) -> int:
        return 0

    def assignment(self) -> set[TopicPartition] | None:
        return {(self._log.topic, p) for p in self._owned}


def pipeline(settings: Settings, store, log: PartitionedLog, owned: list[int], crash: str = "") -> Pipeline:
    writer = ClickHouseWriter(store, settings.database)
    if crash == "before insert":
        def crashing_write(spans, token):
            raise Crash
        writer.write = crashing_write  # type: ignore[method-assign]

    def after_insert() -> None:
        if crash == "after insert":
            raise Crash

    return Pipeline(
        Consumer(log, owned), writer, BatchLedger(store, settings.database),
        DeadLetters(EmbeddedLog().producer(settings.dlq_topic)), PipelineMetrics(),
        batch_rows=10_000, batch_seconds=0.0, after_insert=after_insert, read_range=log.read,
    )


def stored(store, settings: Settings) -> tuple[int, int, int]:
    db = settings.database
    spans, unique = store.query(f"SELECT count(), uniqExact(SpanId) FROM {db}.otel_traces").result_rows[0]
    requests = store.query(f"SELECT sum(Requests) FROM {db}.traffic_1m").result_rows[0][0]
    return int(spans), int(unique), int(requests)


@pytest.mark.parametrize("crash", ["after insert", "before insert"])
def test_an_insert_of_several_partitions_is_replayed_once_by_owners_that_split_it(settings, store, crash):
    log = PartitionedLog(settings.spans_topic)
    with pytest.raises(Crash):
        pipeline(settings, store, log, [0, 1, 2], crash).step(0)
    ledger = BatchLedger(store, settings.database)
    recorded = ledger.last(settings.spans_topic, 1)
    assert sorted((r.partition, r.first, r.last) for r in recorded) == [(0, 0, 1), (1, 0, 1), (2, 0, 1)]
    assert log.committed == {0: 0, 1: 0, 2: 0}
    # After the rebalance, partition 1's owner rebuilds the whole insert from the log; so does the other owner.
    owners = [pipeline(settings, store, log, [1]), pipeline(settings, store, log, [0, 2])]
    deadline = time.monotonic() + 60
    total = PARTITIONS * PER_PARTITION * SPANS
    while stored(store, settings)[0] < total and time.monotonic() < deadline:
        for owner in owners:
            owner.step(0)
    for owner in owners:
        owner.flush()
    assert stored(store, settings) == (total, total, total)
    assert log.committed == dict.fromkeys(range(PARTITIONS), PER_PARTITION)


def test_a_flush_of_several_partitions_is_one_insert(settings, store):
    log = PartitionedLog(settings.spans_topic)
    run = pipeline(settings, store, log, [0, 1, 2])
    run.step(0)
    assert run.metrics.batches._value.get() == 1
    assert stored(store, settings)[0] == PARTITIONS * 2 * SPANS


def test_kafka_log_reads_a_recorded_range_of_one_partition(kafka_settings: Settings):
    from gatewatch.topics import ensure_topics, topic_specs

    ensure_topics(kafka_settings.kafka, topic_specs(kafka_settings))
    kafka = KafkaLog(kafka_settings.kafka)
    producer = kafka.producer(kafka_settings.spans_topic)
    producer.send([Message(f"m{i}".encode(), f"k{i}".encode()) for i in range(12)])
    producer.close()
    per_partition = {p: kafka.read(kafka_settings.spans_topic, p, 0, 1_000, timeout_s=20) for p in range(3)}
    assert sorted(m.value for ms in per_partition.values() for m in ms) == sorted(f"m{i}".encode() for i in range(12))
    partition, messages = max(per_partition.items(), key=lambda kv: len(kv[1]))
    assert [m.offset for m in messages] == list(range(len(messages)))
    middle = kafka.read(kafka_settings.spans_topic, partition, 1, 2, timeout_s=20)
    assert [(m.offset, m.value, m.partition) for m in middle] == [(m.offset, m.value, partition) for m in messages[1:3]]


def test_embedded_log_reads_a_range():
    log = EmbeddedLog()
    log.producer("t").send([Message(f"m{i}".encode()) for i in range(5)])
    assert [(m.offset, m.value) for m in log.read("t", 0, 1, 3)] == [(1, b"m1"), (2, b"m2"), (3, b"m3")]
