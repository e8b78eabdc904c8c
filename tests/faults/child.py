"""Child process for the kill cases: `python -m tests.faults.child ROLE SETTINGS_JSON READY_FILE`.

ROLE `collector` or `pipeline` runs that stage until SIGTERM (or until SIGKILL, which is the
point); ROLE `count` prints the span ids stored for the service named in READY_FILE's place, as
JSON, for parents that may not open that chDB path themselves (one engine per process).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from gatewatch.settings import Settings


def _service(role: str, settings: Settings) -> object:
    if role == "collector":
        from collector.service import CollectorService

        return CollectorService(settings)
    from gatewatch.spanlog import KafkaLog
    from pipelines.service import PipelineService

    # A short session, so the group hands a killed member's partitions on in seconds, not 45 s.
    fast_failover = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
    return PipelineService(settings, span_log=KafkaLog(settings.kafka, consumer=fast_failover))


def _run(role: str, settings: Settings, ready: Path) -> None:
    service = _service(role, settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()  # type: ignore[attr-defined]
    ready.write_text("ready")
    stop.wait()
    service.stop()  # type: ignore[attr-defined]


def _count(settings: Settings, service_name: str) -> None:
    from gatewatch.store import open_store
    from tests.faults.workload import stored_span_ids

    print(json.dumps(stored_span_ids(open_store(settings), settings.database, service_name)))


def main() -> None:
    role, raw, last = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = Settings(**json.loads(raw))
    if role == "count":
        _count(settings, last)
    else:
        _run(role, settings, Path(last))


if __name__ == "__main__":
    main()
