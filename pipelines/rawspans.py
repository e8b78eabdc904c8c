"""A batch kept as the validated OTLP messages themselves; mapped to columns only when needed.

ClickHouse maps the raw bytes itself (`pipelines.sqlmap`), so the hot path never builds Python
objects per attribute. The Python mapper (`decode_into`) runs only for batches SQL cannot map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gatewatch.spanlog import Message
from pipelines.columns import SpanColumns
from pipelines.decode import PoisonMessage, decode_into, parse_request


@dataclass
class RawSpans:
    """Messages that parsed as requests holding spans, in offset order, plus their span count."""

    messages: list[Message] = field(default_factory=list)
    rows: int = 0
    rejected: list[tuple[Message, str]] = field(default_factory=list)  # found only by the Python mapper
    _columns: SpanColumns | None = None

    def __len__(self) -> int:
        return self.rows

    def add(self, message: Message) -> int:
        """Keep a message if it is a request holding spans (else PoisonMessage); returns its span count."""
        request = parse_request(message.value)  # the collector's parser: one definition of a valid message
        spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        self.messages.append(message)
        self.rows += spans
        return spans

    def payloads(self) -> list[bytes]:
        """The message values, in order."""
        return [message.value for message in self.messages]

    def columns(self) -> SpanColumns:
        """Map every message in Python (once); messages it cannot map move to `rejected`."""
        if self._columns is None:
            self._columns = SpanColumns()
            for message in self.messages:
                try:
                    decode_into(message.value, self._columns)
                except PoisonMessage as exc:
                    self.rejected.append((message, str(exc)))
            self.rows = len(self._columns)
        return self._columns
