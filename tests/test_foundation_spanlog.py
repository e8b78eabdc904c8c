"""The span log: the same contract through real Apache Kafka and the embedded log."""

from __future__ import annotations

import threading
import time

import pytest

from gatewatch.errors import SpanLogFull, SpanLogUnavailable
from gatewatch.settings import Settings
from gatewatch.spanlog import EmbeddedLog, KafkaLog, Message, SpanLog, next_offsets, open_span_log
from gatewatch.topics import TopicSpec, ensure_topics, topic_specs
from tests.conftest import unique


def drain(log: SpanLog, topic: str, group: str, want: int, timeout_s: float = 30.0) -> list[Message]:
    consumer = log.consumer(topic, group)
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(1000, 0.5))
    consumer.commit(next_offsets(got))
    consumer.close()
    return got


def roundtrip(log: SpanLog, topic: str, retains_committed: bool) -> None:
    producer = log.producer(topic)
    sent = [Message(f"v{i}".encode(), key=f"k{i % 3}".encode(), headers=(("h", b"1"),)) for i in range(50)]
    producer.send(sent)
    group = unique("g")
    got = drain(log, topic, group, 50)
    assert sorted(m.value for m in got) == sorted(m.value for m in sent)
    assert all(m.headers == (("h", b"1"),) and m.offset >= 0 for m in got)
    # committed: the group resumes after what it committed; Kafka keeps the log for new groups,
    # the embedded log drops what every group has committed (it is a buffer, not storage)
    producer.send([Message(b"late")])
    assert [m.value for m in drain(log, topic, group, 1)] == [b"late"]
    if retains_committed:
        assert len(drain(log, topic, unique("g"), 51)) == 51
    producer.close()


@pytest.mark.kafka
def test_kafka_produce_consume_commit(kafka_bootstrap):
    topic = unique("spans")
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions=3)])
    roundtrip(KafkaLog(kafka_bootstrap), topic, retains_committed=True)


@pytest.mark.kafka
def test_kafka_producer_close_with_unsent_records_closes_for_good(kafka_bootstrap, caplog):
    # a half-closed kafka-python producer closes again in __del__ and prints "Exception ignored"
    topic = unique("spans")
    producer = KafkaLog(kafka_bootstrap, producer={"linger_ms": 500}).producer(topic)
    inner = producer._producer  # type: ignore[attr-defined]
    inner.send(topic, value=b"queued")  # queued, not awaited: close(0) cannot flush it
    producer.close(timeout_s=0)
    assert inner._closed
    assert "unsent records" in caplog.text


@pytest.mark.kafka
class _StalledFuture:
    """A record the client neither delivered nor expired (kafka-python 3.0 after a broker restart)."""

    is_done = False

    def get(self, timeout: float) -> None:
        from kafka.errors import KafkaTimeoutError

        raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")


class _DoneFuture:
    is_done = True

    def get(self, timeout: float) -> None:
        return None


class _FakeClient:
    def __init__(self, stalled: bool) -> None:
        self.stalled, self.sent, self.closed = stalled, 0, False
        self._sender = self

    def send(self, topic: str, **_: object) -> object:
        self.sent += 1
        return _StalledFuture() if self.stalled else _DoneFuture()

    def force_close(self) -> None:
        self.closed = True

    def join(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


def test_kafka_producer_replaced_when_its_client_stops_giving_verdicts(monkeypatch, caplog):
    from gatewatch import spanlog

    clients = [_FakeClient(stalled=True), _FakeClient(stalled=False)]
    fresh = iter(clients)
    monkeypatch.setattr(spanlog._KafkaProducer, "_connect", lambda self: next(fresh))
    producer = spanlog._KafkaProducer("127.0.0.1:9", "spans", {"delivery_timeout_ms": 0})
    with pytest.raises(SpanLogUnavailable):
        producer.send([Message(b"a")], timeout_s=0.0)  # the caller answers 503; its client retries
    assert clients[0].closed and "replacing it" in caplog.text
    producer.send([Message(b"a")], timeout_s=0.0)
    assert clients[1].sent == 1


def test_contract_topics_created_once_with_compaction(kafka_settings: Settings):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    specs = topic_specs(kafka_settings)
    ensure_topics(kafka_settings.kafka, specs)
    ensure_topics(kafka_settings.kafka, specs)  # idempotent
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.kafka)
    assert {s.name for s in specs} <= set(admin.list_topics())
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, kafka_settings.decisions_topic)])
    text = repr(described)
    admin.close()
    assert "cleanup.policy" in text and "compact" in text


def test_embedded_produce_consume_commit():
    roundtrip(EmbeddedLog(), "spans", retains_committed=False)


def test_embedded_blocks_when_full_instead_of_dropping():
    log = EmbeddedLog(capacity=10)
    producer = log.producer("t")
    consumer = log.consumer("t", "g")
    producer.send([Message(b"x")] * 10)
    with pytest.raises(SpanLogFull):
        producer.send([Message(b"y")], timeout_s=0.2)
    done = threading.Event()

    def blocked_send() -> None:
        producer.send([Message(b"z")], timeout_s=5)
        done.set()

    thread = threading.Thread(target=blocked_send)
    thread.start()
    batch = consumer.poll(5, 0.1)
    assert not done.wait(0.2)  # polled but not committed: still no room
    consumer.commit(next_offsets(batch))
    assert done.wait(5)
    thread.join()
    rest = consumer.poll(100, 0.1)
    assert [m.value for m in rest][-1] == b"z" and len(rest) == 6


def test_embedded_consumer_replays_uncommitted_after_restart():
    log = EmbeddedLog()
    log.producer("t").send([Message(str(i).encode()) for i in range(5)])
    first = log.consumer("t", "g")
    batch = first.poll(3, 0.1)
    first.commit(next_offsets(batch[:2]))
    second = log.consumer("t", "g")  # "restarted" member: resumes at the committed offset
    assert [m.value for m in second.poll(10, 0.1)] == [b"2", b"3", b"4"]
    assert second.lag() == 3


def test_open_span_log_picks_backend(settings, kafka_bootstrap):
    assert isinstance(open_span_log(settings), EmbeddedLog)
    assert open_span_log(settings) is open_span_log(settings)
    assert isinstance(open_span_log(settings.model_copy(update={"kafka": kafka_bootstrap})), KafkaLog)
