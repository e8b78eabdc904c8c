"""Kafka topic names and their creation, in one place."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from gatewatch.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """A topic gatewatch owns and how it must be configured."""

    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics of the contract: spans, their dead letters, and compacted decisions."""
    return [
        TopicSpec(settings.spans_topic, partitions=3),
        TopicSpec(settings.dlq_topic, partitions=1),
        TopicSpec(
            settings.decisions_topic,
            partitions=1,
            config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        ),
    ]


def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout_s: float = 30.0) -> None:
    """Create the missing topics; existing ones are left as they are."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.config)
            for spec in specs
            if spec.name not in existing
        ]
        if missing:
            # Another process may create one between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()
