"""The delivery fault cases: spans flow collector -> span log -> pipeline -> store while one part
fails; each case compares the spans the collector acknowledged with the spans stored.

Every case takes a `CaseEnv` (settings with a database and topics of its own, a migrated store
client, a scratch dir) and a `Scale`, so pytest and `make reliability` run the same code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gatewatch.devkafka import free_port
from gatewatch.settings import Settings
from gatewatch.spanlog import EmbeddedLog, SpanLog
from gatewatch.topics import ensure_topics, topic_specs
from pipelines.service import CRASH_ENV
from tests.faults.faults import ROOT, FlakyStore, PrivateKafka, StageProcess
from tests.faults.harness import CaseResult, Scale, delivery, finish
from tests.faults.workload import OtlpSender, SendStats, run_id, stored_span_ids, wait_drained, wait_stored

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


@dataclass
class CaseEnv:
    """What a case may use: its settings (own database and topics), a migrated store, a scratch dir."""

    settings: Settings
    store: Any
    workdir: Path


def with_ports(settings: Settings, **extra: Any) -> Settings:
    """Settings with free listener ports and a consumer group of the case's own (plus `extra`).

    Small batches, so a kill or outage catches several of them in flight.
    """
    return settings.model_copy(
        update={"collector_http_port": free_port(), "collector_grpc_port": free_port(),
                "pipeline_metrics_port": free_port(), "pipeline_group": f"pipeline-{settings.database}",
                "pipeline_batch_rows": 500, "pipeline_batch_seconds": 0.5, **extra}
    )


@contextmanager
def running(*services: Any) -> Iterator[None]:
    """Start services in order, stop them in reverse order even when the case fails."""
    started: list[Any] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        yield
    finally:
        for service in reversed(started):
            service.stop()


def _rate(scale: Scale) -> float:
    return scale.spans / scale.seconds


def _send_with_faults(sender: OtlpSender, scale: Scale, inject: Callable[[int], None]) -> SendStats:
    """Send the scale's spans; inject fault `i` at evenly spaced moments while they flow."""
    sender.start(scale.spans)
    step = scale.seconds / (scale.faults + 1)
    for index in range(scale.faults):
        time.sleep(step)
        inject(index)
    sender.join(scale.seconds * 6 + 60)
    return sender.stop()


def _stored(env: CaseEnv, service: str) -> Callable[[], list[str]]:
    return lambda: stored_span_ids(env.store, env.settings.database, service)


def kafka_restart(env: CaseEnv, scale: Scale) -> CaseResult:
    """Stop the Kafka broker while spans flow, keep it down for a few seconds, restart it."""
    from collector.service import CollectorService
    from pipelines.service import PipelineService

    result = CaseResult(
        "kafka_restart",
        f"{scale.spans} spans over OTLP/HTTP; broker stopped {scale.faults}x for 4 s and restarted",
        "collector answers 503 while Kafka is down, client retries; lost=0 duplicated=0",
    )
    kafka = PrivateKafka(env.workdir / "kafka")
    settings = with_ports(env.settings, kafka=kafka.start())
    try:
        ensure_topics(settings.kafka, topic_specs(settings))
        service = run_id()
        sender = OtlpSender(settings.collector_endpoint, service, rate_per_s=_rate(scale))
        with running(CollectorService(settings), PipelineService(settings, store=env.store)):
            stats = _send_with_faults(sender, scale, lambda _: kafka.bounce(down_s=4.0))
            stored = wait_stored(_stored(env, service), len(stats.acked_ids))
    finally:
        kafka.stop()
    return finish(result, delivery(stats.sent, stats.acked_ids, stored), **_retries(stats))


def store_unavailable(env: CaseEnv, scale: Scale) -> CaseResult:
    """Make every store call fail for a while; the pipeline must hold and retry, not drop."""
    from collector.service import CollectorService
    from pipelines.service import PipelineService

    outage_s = max(3.0, scale.seconds / 3)
    result = CaseResult(
        "store_unavailable",
        f"{scale.spans} spans; every ClickHouse call refused {scale.faults}x for {outage_s:.0f} s",
        "pipeline retries the batch, commits offsets only after the insert; lost=0 duplicated=0",
    )
    settings = with_ports(env.settings, kafka="")
    log: SpanLog = EmbeddedLog()
    flaky = FlakyStore(env.store)
    service = run_id()
    sender = OtlpSender(settings.collector_endpoint, service, rate_per_s=_rate(scale))
    store = cast("Client", flaky)  # it stands in for the client it wraps
    with running(CollectorService(settings, span_log=log), PipelineService(settings, span_log=log, store=store)):
        stats = _send_with_faults(sender, scale, lambda _: _outage(flaky, outage_s))
        stored = wait_stored(_stored(env, service), len(stats.acked_ids))
    return finish(result, delivery(stats.sent, stats.acked_ids, stored), refused_calls=flaky.refused)


def _outage(flaky: FlakyStore, seconds: float) -> None:
    flaky.outage(seconds)
    time.sleep(seconds)


def collector_killed(env: CaseEnv, scale: Scale) -> CaseResult:
    """SIGKILL the collector process while spans flow and start a new one on the same ports."""
    from pipelines.service import PipelineService

    result = CaseResult(
        "collector_killed",
        f"{scale.spans} spans; collector process SIGKILLed {scale.faults}x and restarted",
        "acknowledged spans were in Kafka before the 200; client retries refused requests; lost=0; "
        "at most the one request in flight at each kill stored twice (at-least-once)",
    )
    settings = with_ports(env.settings)
    ensure_topics(settings.kafka, topic_specs(settings))
    collector = StageProcess("collector", settings, env.workdir / "collector.log")
    service = run_id()
    sender = OtlpSender(settings.collector_endpoint, service, rate_per_s=_rate(scale))

    def bounce(_: int) -> None:
        collector.kill()
        collector.start()

    collector.start()
    try:
        with running(PipelineService(settings, store=env.store)):
            stats = _send_with_faults(sender, scale, bounce)
            stored = wait_stored(_stored(env, service), len(stats.acked_ids))
    finally:
        collector.stop()
    # A kill after Kafka took a request's spans but before its 200 left makes the client send them
    # again: OTLP over HTTP is at-least-once there. The sender has one request in flight at a time.
    in_flight = sender.spans_per_request * scale.faults
    return finish(result, delivery(stats.sent, stats.acked_ids, stored, in_flight), **_retries(stats))


def pipeline_killed(env: CaseEnv, scale: Scale) -> CaseResult:
    """SIGKILL the pipeline process mid-batch and restart it; insert dedup tokens must hold."""
    from collector.service import CollectorService

    result = CaseResult(
        "pipeline_killed",
        f"{scale.spans} spans; pipeline process dies right after an insert, before its commit, then is "
        f"SIGKILLed {scale.faults - 1}x more at random; restarted each time",
        "replayed batches are deduplicated by their insert token; lost=0 duplicated=0",
    )
    # The child owns its own chDB engine (one per process), so it gets a store path of its own.
    settings = with_ports(env.settings, clickhouse=f"chdb://{env.workdir / 'pipeline-store'}")
    ensure_topics(settings.kafka, topic_specs(settings))
    pipeline = StageProcess("pipeline", settings, env.workdir / "pipeline.log")
    service = run_id()
    sender = OtlpSender(settings.collector_endpoint, service, rate_per_s=_rate(scale))

    deaths = {"hook": 0.0, "sigkill": 0.0}

    def bounce(index: int) -> None:
        if index == 0:  # the crash hook: insert done, offsets not committed, process gone
            deaths["hook"] += pipeline.wait_exit(60.0) == CRASH_EXIT
        else:
            deaths["sigkill"] += 1
        pipeline.kill()
        pipeline.start()

    pipeline.start(env={CRASH_ENV: "2"})
    try:
        with running(CollectorService(settings)):
            stats = _send_with_faults(sender, scale, bounce)
            wait_drained(settings.kafka, settings.spans_topic)
    finally:
        pipeline.stop()
    stored = _count_in_child(settings, service)
    outcome = finish(result, delivery(stats.sent, stats.acked_ids, stored), **_retries(stats), **deaths)
    if not deaths["hook"]:
        outcome.ok, outcome.verdict, outcome.detail = False, "FAIL", "the pipeline never crashed after an insert"
    return outcome


CRASH_EXIT = 75  # pipelines.service's crash hook exits with this code


def _count_in_child(settings: Settings, service: str) -> list[str]:
    """Stored span ids, read by a child process once the pipeline child has let go of its chDB path."""
    payload = settings.model_dump(mode="json")
    payload["control_token"] = ""
    out = subprocess.run(
        [sys.executable, "-m", "tests.faults.child", "count", json.dumps(payload), service],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=True,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _retries(stats: SendStats) -> dict[str, float]:
    """Non-200 attempts the client saw (what the fault looked like from outside)."""
    refused = sum(n for status, n in stats.statuses.items() if status != "200")
    return {"refused_attempts": float(refused), "client_outage_s": round(stats.longest_outage_s, 1)}


DELIVERY_CASES: dict[str, Callable[[CaseEnv, Scale], CaseResult]] = {
    "kafka_restart": kafka_restart,
    "pipeline_killed": pipeline_killed,
    "store_unavailable": store_unavailable,
    "collector_killed": collector_killed,
}
