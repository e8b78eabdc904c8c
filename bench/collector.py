"""Collector throughput: spans per second per core accepted into Kafka over OTLP/HTTP.

Load: batches of 512 spans (~10 attributes each, 8 spans per trace) POSTed as OTLP protobuf by
concurrent keep-alive clients to a `gatewatch collector` subprocess writing to Kafka with acks=all.
"Per core" = spans acknowledged / CPU seconds the collector process used (utime + stime from
/proc), which holds on a shared, noisy machine where wall-clock rates do not.
Baseline (same invocation): the same per-trace messages produced straight through
gatewatch.spanlog from this process: the Kafka client's own cost, no HTTP and no decoding.
Reference: the OpenTelemetry Collector documents ~12-15k spans/s per core.

Writes bench/results/collector.json. Needs GATEWATCH_KAFKA (else starts a private broker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.split import split_by_trace  # noqa: E402
from gatewatch import devkafka  # noqa: E402
from gatewatch.spanlog import KafkaLog  # noqa: E402
from gatewatch.topics import TopicSpec, ensure_topics  # noqa: E402
from tests.collector_helpers import make_request  # noqa: E402

SPANS_PER_BATCH = 512
SPANS_PER_TRACE = 8
ATTRIBUTES = 10
CLIENTS = 8
WARMUP_S = 3.0
DURATION_S = float(os.environ.get("BENCH_DURATION_S", "20"))
BASELINE_BATCHES = 150
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REFERENCE_OTEL_COLLECTOR = "12-15k spans/s per core (OpenTelemetry Collector docs)"


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def payloads(count: int = 16) -> list[bytes]:
    return [make_request(SPANS_PER_BATCH, SPANS_PER_TRACE, ATTRIBUTES).SerializeToString() for _ in range(count)]


def baseline(bootstrap: str, bodies: list[bytes]) -> dict[str, float]:
    """Produce the collector's per-trace messages straight to Kafka from this process."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    topic = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [TopicSpec(topic, partitions=3)])
    batches = [split_by_trace(ExportTraceServiceRequest.FromString(b), 1_000_000).messages for b in bodies]
    producer = KafkaLog(bootstrap).producer(topic)
    producer.send(batches[0])  # connect and fetch metadata outside the measurement
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(BASELINE_BATCHES):
        producer.send(batches[i % len(batches)])
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    producer.close()
    spans = BASELINE_BATCHES * SPANS_PER_BATCH
    return {"spans": spans, "wall_s": wall, "cpu_s": cpu, "spans_per_s": spans / wall, "spans_per_cpu_s": spans / cpu}


def start_collector(bootstrap: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "GATEWATCH_KAFKA": bootstrap, "GATEWATCH_SPANS_TOPIC": f"bench_spans_{uuid.uuid4().hex[:8]}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gatewatch", "collector", "--http-port", "0", "--grpc-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "OTLP/HTTP http://127.0.0.1:PORT/v1/traces  OTLP/gRPC ..."
    if not line.startswith("OTLP/HTTP"):
        process.kill()
        raise SystemExit(f"collector did not start: {line!r}")
    return process, line.split()[1]


def load(url: str, bodies: list[bytes], stop_at: float, measure_from: float, out: list[tuple[float, float]],
         errors: list[int]) -> None:
    """One keep-alive client posting batches until `stop_at`; records (finish time, latency)."""
    headers = {"content-type": "application/x-protobuf"}
    with httpx.Client(timeout=30) as client:
        i = 0
        while (started := time.perf_counter()) < stop_at:
            response = client.post(url, content=bodies[i % len(bodies)], headers=headers)
            finished = time.perf_counter()
            if response.status_code != 200:
                errors.append(response.status_code)
            elif started >= measure_from:
                out.append((finished, finished - started))
            i += 1


def collector_run(bootstrap: str, bodies: list[bytes]) -> dict[str, float]:
    process, url = start_collector(bootstrap)
    try:
        now = time.perf_counter()
        measure_from, stop_at = now + WARMUP_S, now + WARMUP_S + DURATION_S
        samples: list[tuple[float, float]] = []
        errors: list[int] = []
        threads = [threading.Thread(target=load, args=(url, bodies, stop_at, measure_from, samples, errors))
                   for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu0, wall0 = process_cpu_s(process.pid), time.perf_counter()
        for thread in threads:
            thread.join()
        cpu, wall = process_cpu_s(process.pid) - cpu0, time.perf_counter() - wall0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    latencies = sorted(latency for _, latency in samples)
    spans = len(latencies) * SPANS_PER_BATCH
    return {
        "spans": spans, "wall_s": wall, "cpu_s": cpu, "spans_per_s": spans / wall, "spans_per_cpu_s": spans / cpu,
        "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "errors": len(errors),
    }


def main() -> int:
    bootstrap = os.environ.get("GATEWATCH_KAFKA", "")
    private = None
    if not bootstrap:
        private = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
        bootstrap = devkafka.start(private).bootstrap
    try:
        bodies = payloads()
        base = baseline(bootstrap, bodies)
        run = collector_run(bootstrap, bodies)
    finally:
        if private:
            devkafka.stop(private)
    print(f"collector bench: {SPANS_PER_BATCH}-span batches, {ATTRIBUTES} attributes/span, "
          f"{SPANS_PER_TRACE} spans/trace, {CLIENTS} clients, {DURATION_S:.0f}s, Kafka acks=all, {os.cpu_count()} CPUs")
    print(f"{'path':<44}{'spans/s':>10}{'CPU s':>8}{'spans/CPU-s':>13}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'baseline: spanlog produce only (no HTTP)':<44}{base['spans_per_s']:>10.0f}{base['cpu_s']:>8.1f}"
          f"{base['spans_per_cpu_s']:>13.0f}{'':>9}{'':>9}")
    print(f"{'collector: OTLP/HTTP -> Kafka':<44}{run['spans_per_s']:>10.0f}{run['cpu_s']:>8.1f}"
          f"{run['spans_per_cpu_s']:>13.0f}{run['p50_ms']:>9.1f}{run['p99_ms']:>9.1f}")
    print(f"reference: {REFERENCE_OTEL_COLLECTOR}; target >= 50000 spans/s per core; errors: {run['errors']}")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "collector.json").write_text(json.dumps({
        "config": {"spans_per_batch": SPANS_PER_BATCH, "attributes": ATTRIBUTES, "spans_per_trace": SPANS_PER_TRACE,
                   "clients": CLIENTS, "duration_s": DURATION_S, "cpus": os.cpu_count()},
        "baseline_spanlog_only": base, "collector_otlp_http": run, "reference": REFERENCE_OTEL_COLLECTOR,
        "target_spans_per_cpu_s": 50_000,
    }, indent=2))
    return 0 if run["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
