"""Per-partition batches: the span messages of a contiguous offset range of one partition."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipelines.ledger import OffsetRange
from pipelines.rawspans import RawSpans


@dataclass
class PartitionBatch:
    """Spans of one partition from `first` to `last` (inclusive), plus dead letters in between."""

    topic: str
    partition: int
    first: int
    last: int = -1
    replay_end: int | None = None  # rebuilding a recorded range: it must end exactly here
    spans: RawSpans = field(default_factory=RawSpans)
    started: float = field(default_factory=time.monotonic)
    touched: float = field(default_factory=time.monotonic)

    @property
    def range(self) -> OffsetRange:
        return OffsetRange(self.topic, self.partition, self.first, self.last)

    @property
    def complete_replay(self) -> bool:
        """A rebuilt batch that reached the end of its recorded range."""
        return self.replay_end is not None and self.last >= self.replay_end

    def age(self, now: float) -> float:
        return now - self.started

    def stalled_for(self, now: float) -> float:
        return now - self.touched
