"""A real single-node Apache Kafka (KRaft) broker for development and tests.

The broker's jars come from Maven Central through `deploy/kafka/pom.xml` (resolved with `mvn`,
cached in the state dir) and run on the machine's Java 17. The broker binds to 127.0.0.1 on free
ports with a temporary data dir, and is stopped by the pid this module recorded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from gatewatch.errors import GatewatchError

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "kafka"


@dataclass(frozen=True)
class Broker:
    """A broker this module started: where it listens and how to find its process."""

    bootstrap: str
    pid: int
    state_dir: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise GatewatchError(f"{tool} is not installed but is needed to run Kafka: {hint}")
    return path


def java_major_version(java: str) -> int:
    """The major version of the `java` on PATH (17 for `17.0.15`)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    for token in out.replace('"', " ").split():
        if token[:1].isdigit():
            head = token.split(".")[0]
            return int(head) if head != "1" else int(token.split(".")[1])
    return 0


def resolve_jars(state_dir: Path) -> Path:
    """The folder of broker jars, resolved through Maven on first use."""
    libs = state_dir / "libs"
    marker = libs / ".resolved"
    pom = DEPLOY_DIR / "pom.xml"
    if marker.exists() and marker.read_text() == pom.read_text():
        return libs
    mvn = _require("mvn", "install Maven (apt-get install maven)")
    shutil.rmtree(libs, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise GatewatchError("Maven could not resolve the Kafka jars: " + " | ".join(tail))
    marker.write_text(pom.read_text())
    return libs


def _java_command(java: str, libs: Path, state_dir: Path, *args: str) -> list[str]:
    return [
        java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC",
        f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={state_dir}", "-cp", f"{libs}/*", *args,
    ]


def _write_config(state_dir: Path, port: int, controller_port: int) -> Path:
    log_dir = state_dir / "data"
    shutil.rmtree(log_dir, ignore_errors=True)
    template = Template((DEPLOY_DIR / "server.properties").read_text())
    config = state_dir / "server.properties"
    config.write_text(
        template.substitute(port=port, controller_port=controller_port, log_dir=log_dir)
    )
    return config


def _read_state(state_dir: Path) -> Broker | None:
    path = state_dir / "broker.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Broker(data["bootstrap"], int(data["pid"]), state_dir)


def _is_our_broker(broker: Broker) -> bool:
    try:
        cmdline = Path(f"/proc/{broker.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "kafka.Kafka" in cmdline and str(broker.state_dir) in cmdline


def status(state_dir: Path) -> Broker | None:
    """The running broker started from this state dir, if any."""
    broker = _read_state(state_dir.resolve())
    return broker if broker and _is_our_broker(broker) else None


def wait_until_ready(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Block until the broker takes a produce and serves it back to a consumer."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    topic = "__gatewatch_probe"
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=5000)
            token = uuid.uuid4().bytes
            producer.send(topic, token).get(timeout=10)
            producer.close()
            consumer = KafkaConsumer(
                topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                consumer_timeout_ms=5000, group_id=None,
            )
            seen = any(record.value == token for record in consumer)
            consumer.close()
            if seen:
                return
        except KafkaError as exc:
            last = exc
        time.sleep(0.5)
    raise GatewatchError(f"Kafka at {bootstrap} did not become ready in {timeout_s:.0f}s: {last}")


def _kept_port(state_dir: Path) -> int:
    """The listener port of a broker whose data was kept by `stop(keep_data=True)`, else 0."""
    config = state_dir / "server.properties"
    if not (state_dir / "data" / "meta.properties").exists() or not config.exists():
        return 0
    for line in config.read_text().splitlines():
        if line.startswith("advertised.listeners="):
            return int(line.rsplit(":", 1)[1])
    return 0


def start(state_dir: Path, port: int = 0, timeout_s: float = 90.0, keep_data: bool = False) -> Broker:
    """Start a broker (or return the one already running from this state dir).

    With `keep_data`, a broker stopped by `stop(keep_data=True)` restarts on its old port and
    log, so what it had acknowledged before is still there (the fault tests restart Kafka so).
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    running = status(state_dir)
    if running:
        return running
    java = _require("java", "install Java 17 (apt-get install openjdk-17-jre-headless)")
    if java_major_version(java) < 17:
        raise GatewatchError("Kafka 4 needs Java 17 or newer: install openjdk-17-jre-headless")
    libs = resolve_jars(state_dir)
    kept = _kept_port(state_dir) if keep_data else 0
    if kept:
        port, config = kept, state_dir / "server.properties"
    else:
        port = port or free_port()
        config = _write_config(state_dir, port, free_port())
        _format_storage(java, libs, state_dir, config)
    log = (state_dir / "broker.log").open("wb")
    process = subprocess.Popen(
        _java_command(java, libs, state_dir, "kafka.Kafka", str(config)),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    broker = Broker(f"127.0.0.1:{port}", process.pid, state_dir)
    (state_dir / "broker.json").write_text(json.dumps({"bootstrap": broker.bootstrap, "pid": broker.pid}))
    try:
        wait_until_ready(broker.bootstrap, timeout_s)
    except GatewatchError:
        stop(state_dir)
        raise
    return broker


def new_cluster_id() -> str:
    """A random Kafka cluster id that the storage tool's argument parser accepts."""
    # Like Kafka's Uuid.randomUuid: an id starting with '-' would be read as an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(java: str, libs: Path, state_dir: Path, config: Path) -> None:
    cluster_id = new_cluster_id()
    formatted = subprocess.run(
        _java_command(java, libs, state_dir, "kafka.tools.StorageTool", "format",
                      "-t", cluster_id, "-c", str(config)),
        capture_output=True, text=True, timeout=120,
    )
    if formatted.returncode != 0:
        raise GatewatchError(f"Kafka storage format failed: {formatted.stderr.strip()[-300:]}")


def stop(state_dir: Path, timeout_s: float = 30.0, keep_data: bool = False) -> bool:
    """Stop the broker started from this state dir by its pid; True if one was running.

    `keep_data` leaves its log in place for `start(keep_data=True)`.
    """
    state_dir = state_dir.resolve()
    broker = status(state_dir)
    (state_dir / "broker.json").unlink(missing_ok=True)
    if broker is None:
        return False
    os.kill(broker.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _is_our_broker(broker):
        _reap(broker.pid)
        time.sleep(0.2)
    if _is_our_broker(broker):
        os.kill(broker.pid, signal.SIGKILL)
        _reap(broker.pid)
    if not keep_data:
        shutil.rmtree(state_dir / "data", ignore_errors=True)
    return True


def _reap(pid: int) -> None:
    # Not our child when another command started it: init reaps it then.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
