"""The span log: an append-only, partitioned message log between collector and pipeline.

One small interface, two implementations sharing one code path for their users:
`KafkaLog` (kafka-python, `acks=all`) for the full stack, and `EmbeddedLog` (in-process,
bounded, blocking when full rather than dropping) for `make demo` and single-process use.
Consumers commit offsets explicitly, so a restarted consumer replays what it had not committed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gatewatch.errors import SpanLogFull, SpanLogUnavailable
from gatewatch.settings import Settings

Headers = tuple[tuple[str, bytes], ...]
TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Message:
    """One log record; `partition`/`offset` are set on consumed messages."""

    value: bytes
    key: bytes | None = None
    headers: Headers = ()
    topic: str = ""
    partition: int = 0
    offset: int = -1


class LogProducer(ABC):
    """Writes messages to one topic."""

    @abstractmethod
    def send(self, messages: Sequence[Message], timeout_s: float = 10.0) -> None:
        """Return once every message is durably stored, or raise SpanLogUnavailable."""

    @abstractmethod
    def healthy(self) -> bool:
        """True while the log can accept writes."""

    def close(self, timeout_s: float = 10.0) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""


class LogConsumer(ABC):
    """Reads one topic as a member of a consumer group; offsets are committed explicitly."""

    @abstractmethod
    def poll(self, max_messages: int = 10_000, timeout_s: float = 1.0) -> list[Message]:
        """The next messages after the current position (possibly none)."""

    @abstractmethod
    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Record `next offset to read` per partition for the group."""

    @abstractmethod
    def lag(self) -> int:
        """Messages in the log that the group has not committed yet."""

    def assignment(self) -> set[TopicPartition] | None:
        """Partitions this member owns right now; None when the log has no groups to share."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Leave the group without committing."""


class SpanLog(ABC):
    """Factory for producers and consumers of one log backend."""

    @abstractmethod
    def producer(self, topic: str) -> LogProducer:
        """A producer for `topic`."""

    @abstractmethod
    def consumer(self, topic: str, group: str) -> LogConsumer:
        """A consumer of `topic` in `group`, starting at the group's committed offsets."""

    def read(self, topic: str, partition: int, first: int, last: int, timeout_s: float = 30.0) -> list[Message]:
        """Messages `first`..`last` (inclusive) of one partition, outside any group (what is retained)."""
        raise NotImplementedError


def next_offsets(messages: Sequence[Message]) -> dict[TopicPartition, int]:
    """The offsets to commit after processing `messages`: last offset + 1 per partition."""
    result: dict[TopicPartition, int] = {}
    for message in messages:
        tp = (message.topic, message.partition)
        result[tp] = max(result.get(tp, 0), message.offset + 1)
    return result


# --- embedded ---------------------------------------------------------------------------------


@dataclass
class _EmbeddedTopic:
    capacity: int
    base: int = 0  # offset of entries[0]
    entries: list[Message] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def end(self) -> int:
        return self.base + len(self.entries)

    def retained_from(self) -> int:
        """Lowest offset some group still needs; everything below can be dropped."""
        return min(self.committed.values(), default=self.base)

    def trim(self) -> None:
        keep_from = self.retained_from()
        if keep_from > self.base:
            del self.entries[: keep_from - self.base]
            self.base = keep_from


class _EmbeddedProducer(LogProducer):
    def __init__(self, topic: str, state: _EmbeddedTopic) -> None:
        self._topic = topic
        self._state = state

    def send(self, messages: Sequence[Message], timeout_s: float = 10.0) -> None:
        state = self._state
        if len(messages) > state.capacity:
            raise SpanLogFull(f"batch of {len(messages)} messages exceeds the span log capacity")
        deadline = time.monotonic() + timeout_s
        with state.cond:
            while state.end - state.retained_from() + len(messages) > state.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SpanLogFull("embedded span log is full: the pipeline is behind")
                state.cond.wait(remaining)
            for message in messages:
                state.entries.append(
                    Message(message.value, message.key, message.headers, self._topic, 0, state.end)
                )
            state.cond.notify_all()

    def healthy(self) -> bool:
        return True


class _EmbeddedConsumer(LogConsumer):
    def __init__(self, topic: str, group: str, state: _EmbeddedTopic) -> None:
        self._topic, self._group, self._state = topic, group, state
        with state.cond:
            state.committed.setdefault(group, state.base)
            self._position = state.committed[group]

    def poll(self, max_messages: int = 10_000, timeout_s: float = 1.0) -> list[Message]:
        state = self._state
        with state.cond:
            if self._position >= state.end:
                state.cond.wait(timeout_s)
            start = max(self._position, state.base) - state.base
            batch = state.entries[start : start + max_messages]
            self._position = state.base + start + len(batch)
            return batch

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        state = self._state
        with state.cond:
            offset = offsets.get((self._topic, 0))
            if offset is not None and offset > state.committed.get(self._group, 0):
                state.committed[self._group] = offset
                state.trim()
                state.cond.notify_all()

    def lag(self) -> int:
        with self._state.cond:
            return self._state.end - self._state.committed.get(self._group, self._state.base)


class EmbeddedLog(SpanLog):
    """In-process log: one partition per topic, bounded, producers block while it is full."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._topics: dict[str, _EmbeddedTopic] = {}
        self._lock = threading.Lock()

    def _topic(self, name: str) -> _EmbeddedTopic:
        with self._lock:
            return self._topics.setdefault(name, _EmbeddedTopic(self._capacity))

    def producer(self, topic: str) -> LogProducer:
        return _EmbeddedProducer(topic, self._topic(topic))

    def consumer(self, topic: str, group: str) -> LogConsumer:
        return _EmbeddedConsumer(topic, group, self._topic(topic))

    def read(self, topic: str, partition: int, first: int, last: int, timeout_s: float = 30.0) -> list[Message]:
        state = self._topic(topic)
        with state.cond:
            return state.entries[max(first - state.base, 0) : max(last + 1 - state.base, 0)]


# --- Kafka ------------------------------------------------------------------------------------


def _unavailable(bootstrap: str, exc: BaseException) -> SpanLogUnavailable:
    return SpanLogUnavailable(
        f"Kafka at {bootstrap} is not reachable ({type(exc).__name__}: {exc}); "
        "check GATEWATCH_KAFKA and that the broker is running"
    )


class _KafkaProducer(LogProducer):
    def __init__(self, bootstrap: str, topic: str, options: dict[str, Any]) -> None:
        self._bootstrap, self._topic = bootstrap, topic
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            # A retry after a lost acknowledgement must not write the records twice (the default
            # since Kafka 3.0's Java clients; kafka-python 2.x still defaults to False).
            "enable_idempotence": True,
            "linger_ms": 5,
            "batch_size": 1 << 20,
            "max_request_size": 1 << 20,
            "request_timeout_ms": 5_000,
            # Undeliverable records expire after this instead of landing after send() reported a
            # failure (the caller's retry would then store them twice).
            "delivery_timeout_ms": 6_000,
            "max_block_ms": 10_000,
            "retries": 5,
            # kafka-python backs off up to 30 s between reconnects; Java clients 1 s. A restarted
            # broker should be used again within a second, not half a minute.
            "reconnect_backoff_max_ms": 1_000,
        }
        self._config.update(options)
        self._verdict_s = self._config["delivery_timeout_ms"] / 1000 + 1.0
        self._lock = threading.Lock()
        self._producer = self._connect()

    def _connect(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            return KafkaProducer(**self._config)
        except KafkaError as exc:
            raise _unavailable(self._bootstrap, exc) from None

    def send(self, messages: Sequence[Message], timeout_s: float = 10.0) -> None:
        from kafka.errors import KafkaError

        # Wait for the producer's own verdict on each record (due within delivery_timeout_ms): an
        # earlier give-up would call records failed that may still be written.
        deadline = time.monotonic() + max(timeout_s, self._verdict_s)
        producer = self._producer
        try:
            futures = [
                producer.send(self._topic, value=m.value, key=m.key, headers=list(m.headers)) for m in messages
            ]
        except KafkaError as exc:
            raise _unavailable(self._bootstrap, exc) from None
        for future in futures:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                if not future.is_done:
                    self._replace_stalled(producer)
                raise _unavailable(self._bootstrap, exc) from None

    def _replace_stalled(self, stalled: Any) -> None:
        """Swap in a new client when one gave no verdict past its own delivery timeout.

        A client that breaks that promise has stopped sending (kafka-python 3.0 did after a broker
        restart). Its records were never acknowledged, so callers retry them; one that had reached
        the broker is then stored twice: liveness over a duplicate, as a last resort only.
        """
        with self._lock:
            if self._producer is not stalled:
                return  # another sender already replaced it
            logging.getLogger(__name__).warning(
                "Kafka producer for %s gave no verdict within its delivery timeout; replacing it", self._topic
            )
            self._force_close(stalled)
            with contextlib.suppress(SpanLogUnavailable):  # still down: the next send() reconnects
                self._producer = self._connect()

    def healthy(self) -> bool:
        return bool(self._producer.bootstrap_connected())

    def close(self, timeout_s: float = 10.0) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.close(timeout=timeout_s)
        except KafkaError as exc:
            # Records still queued were never acknowledged (send() waits for the verdict): stopping
            # must not fail on them.
            logging.getLogger(__name__).warning("span log producer closed with unsent records: %s", exc)
            self._force_close(self._producer)

    @staticmethod
    def _force_close(producer: Any) -> None:
        """Fail the records still queued and finish closing a kafka-python producer."""
        from kafka.errors import KafkaError

        # kafka-python marks itself closed only after a successful flush; left half-closed, its
        # __del__ closes again at garbage collection and prints "Exception ignored ... Timeout
        # waiting for future". A forced sender stop fails the queued batches, so the flush in the
        # second close has nothing left to wait for.
        sender = producer._sender
        sender.force_close()
        sender.join(1.0)
        with contextlib.suppress(KafkaError):  # already reported by close()
            producer.close(timeout=0)


class _KafkaConsumer(LogConsumer):
    def __init__(self, bootstrap: str, topic: str, group: str, options: dict[str, Any]) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self._bootstrap = bootstrap
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": 8 << 20,
            "reconnect_backoff_max_ms": 1_000,
        }
        config.update(options)
        try:
            self._consumer = KafkaConsumer(topic, **config)
        except KafkaError as exc:
            raise _unavailable(bootstrap, exc) from None

    def poll(self, max_messages: int = 10_000, timeout_s: float = 1.0) -> list[Message]:
        from kafka.errors import KafkaError

        try:
            records = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_messages)
        except KafkaError as exc:
            raise _unavailable(self._bootstrap, exc) from None
        return [
            Message(r.value, r.key, tuple(r.headers or ()), r.topic, r.partition, r.offset)
            for batch in records.values()
            for r in batch
        ]

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        from kafka import TopicPartition as KafkaTopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        try:
            self._consumer.commit(
                {KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            )
        except KafkaError as exc:
            raise _unavailable(self._bootstrap, exc) from None

    def lag(self) -> int:
        from kafka.errors import KafkaError

        assigned = self._consumer.assignment()
        if not assigned:
            return 0
        try:  # a broker outage is SpanLogUnavailable here too, not a raw KafkaTimeoutError
            ends = self._consumer.end_offsets(list(assigned))
            committed = {tp: self._consumer.committed(tp) or 0 for tp in assigned}
        except KafkaError as exc:
            raise _unavailable(self._bootstrap, exc) from None
        return sum(max(0, ends.get(tp, 0) - committed[tp]) for tp in assigned)

    def assignment(self) -> set[TopicPartition] | None:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaLog(SpanLog):
    """Apache Kafka through kafka-python; extra client options pass through unchanged."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        self.bootstrap = bootstrap
        self._options = options

    def producer(self, topic: str) -> LogProducer:
        return _KafkaProducer(self.bootstrap, topic, self._options.get("producer", {}))

    def consumer(self, topic: str, group: str) -> LogConsumer:
        return _KafkaConsumer(self.bootstrap, topic, group, self._options.get("consumer", {}))

    def read(self, topic: str, partition: int, first: int, last: int, timeout_s: float = 30.0) -> list[Message]:
        from kafka import KafkaConsumer
        from kafka import TopicPartition as KafkaTopicPartition
        from kafka.errors import KafkaError

        tp = KafkaTopicPartition(topic, partition)
        out: list[Message] = []
        try:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                     auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
            try:
                consumer.assign([tp])
                consumer.seek(tp, first)
                deadline = time.monotonic() + timeout_s
                # Stops at `last` or at the end of the partition (a range past it was never written).
                while (not out or out[-1].offset < last) and consumer.position(tp) <= last:
                    if time.monotonic() > deadline:
                        raise SpanLogUnavailable(f"reading {topic}[{partition}]@{first}-{last} timed out")
                    for r in consumer.poll(timeout_ms=500).get(tp, []):
                        if first <= r.offset <= last:
                            out.append(Message(r.value, r.key, tuple(r.headers or ()), r.topic, r.partition, r.offset))
                    if consumer.position(tp) >= consumer.end_offsets([tp])[tp]:
                        break
            finally:
                consumer.close(autocommit=False)
        except KafkaError as exc:
            raise _unavailable(self.bootstrap, exc) from None
        return out


_embedded: EmbeddedLog | None = None
_embedded_lock = threading.Lock()


def open_span_log(settings: Settings) -> SpanLog:
    """Kafka when GATEWATCH_KAFKA is set, else the process-wide embedded log."""
    global _embedded
    if settings.kafka:
        return KafkaLog(settings.kafka)
    with _embedded_lock:
        if _embedded is None:
            _embedded = EmbeddedLog()
        return _embedded
