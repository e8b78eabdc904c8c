"""The consume -> decode -> batch -> insert -> commit loop, one step at a time (the service runs it).

Offsets are committed only after the batch's insert succeeded. The ready partitions' batches are
inserted with one statement (each statement pays the views' fixed cost) whose deduplication token
names every offset range in it, and the ranges are recorded in the ledger first, so a replay after a
crash, restart or rebalance rebuilds the same insert and ClickHouse drops it. A replay of a
several-partition insert reads its ranges from the log itself: after a rebalance the partitions may
have different owners, and each of them rebuilds the whole insert (the duplicates are dropped too).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial

from gatewatch.errors import GatewatchError
from gatewatch.spanlog import LogConsumer, Message, TopicPartition
from pipelines.batch import PartitionBatch
from pipelines.decode import PoisonMessage
from pipelines.dlq import DeadLetters
from pipelines.ledger import BatchLedger, OffsetRange, group_token
from pipelines.metrics import PipelineMetrics
from pipelines.rawspans import RawSpans
from pipelines.retry import Backoff
from pipelines.writer import SpanWriter

log = logging.getLogger(__name__)

LAG_EVERY_S = 5.0
POLL_MESSAGES = 1000
POLL_BACKOFF_CAP_S = 5.0


class Pipeline:
    """Moves spans from a span-log consumer into a SpanWriter, batch by batch."""

    def __init__(
        self,
        consumer: LogConsumer,
        writer: SpanWriter,
        ledger: BatchLedger,
        dead_letters: DeadLetters,
        metrics: PipelineMetrics,
        batch_rows: int = 10_000,
        batch_seconds: float = 1.0,
        backoff: Backoff | None = None,
        after_insert: Callable[[], None] | None = None,
        read_range: Callable[[OffsetRange], list[Message]] | None = None,
    ) -> None:
        """`read_range` reads a recorded range from the log; without it each partition is inserted alone."""
        self._consumer, self._writer, self._ledger = consumer, writer, ledger
        self._dead_letters, self.metrics = dead_letters, metrics
        self._batch_rows, self._batch_seconds = batch_rows, batch_seconds
        self.backoff = backoff or Backoff()
        self._after_insert = after_insert
        self._batches: dict[TopicPartition, PartitionBatch] = {}
        self._next: dict[TopicPartition, int] = {}
        self._read_range = read_range
        self._replayed: set[str] = set()  # tokens of several-partition inserts rebuilt from the log
        self._replayed_to: dict[TopicPartition, int] = {}  # offsets those replays already stored
        self._lag_at = 0.0
        self._pending = 0
        self._poll_delay = 0.0

    @property
    def pending_rows(self) -> int:
        """Spans decoded but not yet inserted."""
        return self._pending

    def step(self, poll_timeout_s: float = 0.2) -> int:
        """Poll once, decode what came, flush if a batch is due; returns the messages handled."""
        messages = self._poll(poll_timeout_s)
        self._forget_revoked()
        for message in messages:
            self._handle(message)
            if self.pending_rows >= self._batch_rows:
                self.flush()
        self.metrics.messages.inc(len(messages))
        if self._due(time.monotonic()):
            self.flush()
        self._update_lag()
        return len(messages)

    def _poll(self, timeout_s: float) -> list[Message]:
        """The next messages; none while the log is unreachable (batches due still flush meanwhile)."""
        try:
            messages = self._consumer.poll(POLL_MESSAGES, timeout_s)
        except GatewatchError as exc:
            self.metrics.poll_errors.inc()
            self._poll_delay = min(POLL_BACKOFF_CAP_S, self._poll_delay * 2 or timeout_s)
            log.warning("polling the span log failed (%s); retrying in %.1fs", exc, self._poll_delay)
            self.backoff.abandon.wait(self._poll_delay)
            return []
        self._poll_delay = 0.0
        return messages

    def flush(self, force_replays: bool = False) -> None:
        """Insert every ready batch, then commit its offsets (raises retry.Abandoned when stopping)."""
        now = time.monotonic()
        ready = [b for b in self._batches.values() if force_replays or self._replay_ready(b, now)]
        if not ready:
            return
        inserts = self._group([b for b in ready if len(b.spans)])
        self.backoff.run(
            "recording batch offsets", lambda: self._ledger.record([[b.range for b in group] for group in inserts]),
            self.metrics.store_errors.inc,
        )
        for group in inserts:
            self._insert(_joined([b.spans for b in group]), group_token([b.range for b in group]))
        if self._after_insert:
            self._after_insert()
        self._commit({(b.topic, b.partition): b.last + 1 for b in ready})
        for batch in ready:
            del self._batches[(batch.topic, batch.partition)]
        self._recount()

    def _recount(self) -> None:
        self._pending = sum(len(batch.spans) for batch in self._batches.values())

    def _group(self, batches: list[PartitionBatch]) -> list[list[PartitionBatch]]:
        """The inserts of a flush: fresh batches together, each rebuilt range alone (its recorded token)."""
        fresh = [b for b in batches if b.replay_end is None]
        alone = [b for b in batches if b.replay_end is not None]
        if self._read_range is None:  # nothing could rebuild a several-partition insert
            alone, fresh = batches, []
        return [[b] for b in alone] + ([fresh] if fresh else [])

    def _insert(self, spans: RawSpans, token: str) -> None:
        started = time.perf_counter()
        self.backoff.run(
            f"inserting {len(spans)} spans", lambda: self._writer.write(spans, token), self.metrics.store_errors.inc
        )
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for message, error in spans.rejected:  # only the Python mapper finds these, at insert time
            self._dead_letter(message, error)
        self.metrics.rows_written.inc(len(spans))
        self.metrics.batches.inc()

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            self._consumer.commit(offsets)
        except GatewatchError as exc:
            # Rebalance or broker trouble: whoever replays these offsets rebuilds the recorded
            # ranges, so the insert is deduplicated; nothing is lost.
            self.metrics.commit_errors.inc()
            log.warning("offset commit failed (%s); the batch will be replayed and deduplicated", exc)

    def _handle(self, message: Message) -> None:
        tp = (message.topic, message.partition)
        if message.offset <= self._replayed_to.get(tp, -1):
            return  # stored by the replay of a several-partition insert
        batch = self._batches.get(tp)
        expected = self._next.get(tp)
        if expected is None or message.offset < expected:
            # First message since start or a rebalance, or a rewind: maybe a recorded range to rebuild.
            opened = self._open(message)
            if opened is None:
                return
            batch = opened
        elif batch is None:
            batch = self._batches[tp] = PartitionBatch(message.topic, message.partition, message.offset)
        elif batch.replay_end is not None and message.offset > batch.replay_end:
            self.flush()
            batch = self._batches[tp] = PartitionBatch(message.topic, message.partition, message.offset)
        try:
            self._pending += batch.spans.add(message)
        except PoisonMessage as exc:
            self._dead_letter(message, str(exc))
        batch.last = message.offset
        batch.touched = time.monotonic()
        self._next[tp] = message.offset + 1
        if batch.complete_replay:
            self.flush()

    def _dead_letter(self, message: Message, error: str) -> None:
        self.backoff.run("sending a dead letter", lambda: self._dead_letters.send(message, error))
        self.metrics.dlq.inc()
        log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)

    def _open(self, message: Message) -> PartitionBatch | None:
        """A batch for the message's partition; None if a replay from the log stored the message."""
        recorded = self.backoff.run(
            "reading the batch ledger", lambda: self._ledger.last(message.topic, message.partition),
            self.metrics.store_errors.inc,
        )
        batch = PartitionBatch(message.topic, message.partition, message.offset)
        own = recorded[0] if recorded else None
        if own and own.first <= message.offset <= own.last and len(recorded) > 1:
            self._replay_from_log(recorded)
            return None
        if own and own.first <= message.offset <= own.last:
            batch.first, batch.replay_end = own.first, own.last
            log.info("rebuilding recorded batch %s so its insert is deduplicated", own.token)
        self._batches[(message.topic, message.partition)] = batch
        self._recount()
        return batch

    def _replay_from_log(self, ranges: list[OffsetRange]) -> None:
        """Rebuild a several-partition insert from the log (once per process), then skip its messages."""
        if self._read_range is None:
            raise GatewatchError("a recorded several-partition batch needs a log reader to be replayed")
        read = self._read_range
        token, own = group_token(ranges), ranges[0]
        if token not in self._replayed:
            log.info("rebuilding recorded batch %s from the log so its insert is deduplicated", token)
            spans = RawSpans()
            for r in ranges:
                messages: list[Message] = self.backoff.run("reading a recorded batch", partial(read, r))
                for message in messages:
                    with contextlib.suppress(PoisonMessage):  # sent to the DLQ before the range was recorded
                        spans.add(message)
            self._insert(spans, token)
            self._replayed.add(token)
        tp = (own.topic, own.partition)
        self._batches.pop(tp, None)
        self._recount()
        self._replayed_to[tp], self._next[tp] = own.last, own.last + 1
        self._commit({tp: own.last + 1})

    def _replay_ready(self, batch: PartitionBatch, now: float) -> bool:
        """A normal batch is always ready; a rebuilt one only once complete (or stalled for long)."""
        if batch.replay_end is None or batch.complete_replay:
            return True
        return batch.stalled_for(now) > max(5.0, 10 * self._batch_seconds)

    def _due(self, now: float) -> bool:
        if self.pending_rows >= self._batch_rows:
            return True
        return any(b.age(now) >= self._batch_seconds and self._replay_ready(b, now) for b in self._batches.values())

    def _forget_revoked(self) -> None:
        owned = self._consumer.assignment()
        if owned is None:
            return
        for tp in [tp for tp in self._next if tp not in owned]:
            # Another member owns it now and replays from the last commit: never insert it here.
            self._batches.pop(tp, None)
            self._replayed_to.pop(tp, None)
            del self._next[tp]
            self._recount()

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at >= LAG_EVERY_S:
            self._lag_at = now
            try:
                self.metrics.consumer_lag.set(self._consumer.lag())
            except GatewatchError as exc:
                log.debug("lag unavailable: %s", exc)


def _joined(parts: list[RawSpans]) -> RawSpans:
    """One batch holding the messages of `parts` in order."""
    if len(parts) == 1:
        return parts[0]
    return RawSpans([m for part in parts for m in part.messages], sum(part.rows for part in parts))
