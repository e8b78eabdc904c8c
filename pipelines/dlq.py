"""Dead letters: messages that can never be stored go to `otlp_spans.dlq` with why and where from."""

from __future__ import annotations

from gatewatch.spanlog import LogProducer, Message

MAX_ERROR_BYTES = 1024


def dead_letter(message: Message, error: str) -> Message:
    """The DLQ copy of a message: same key and value, headers naming the error and source offset."""
    headers = (
        *message.headers,
        ("error", error.encode()[:MAX_ERROR_BYTES]),
        ("source.topic", message.topic.encode()),
        ("source.partition", str(message.partition).encode()),
        ("source.offset", str(message.offset).encode()),
    )
    return Message(message.value, message.key, headers)


class DeadLetters:
    """Sends dead letters; a send failure raises so the source offset is never committed past it."""

    def __init__(self, producer: LogProducer) -> None:
        self._producer = producer

    def send(self, message: Message, error: str) -> None:
        self._producer.send([dead_letter(message, error)])

    def close(self) -> None:
        self._producer.close()
