"""Fault injectors: a Kafka broker that can be stopped and restarted, a store that goes away for a
while, and stage processes that can be killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gatewatch import devkafka
from gatewatch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class PrivateKafka:
    """A broker of the case's own, so stopping it disturbs nobody else's tests."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.bootstrap = ""

    def start(self) -> str:
        _share_jars(self.state_dir)
        self.bootstrap = devkafka.start(self.state_dir).bootstrap
        return self.bootstrap

    def bounce(self, down_s: float) -> None:
        """Stop the broker (its log kept), stay down `down_s` seconds, start it on the same port."""
        devkafka.stop(self.state_dir, keep_data=True)
        time.sleep(down_s)
        again = devkafka.start(self.state_dir, keep_data=True).bootstrap
        assert again == self.bootstrap, f"broker came back on {again}, not {self.bootstrap}"

    def stop(self) -> None:
        devkafka.stop(self.state_dir)


def _share_jars(state_dir: Path) -> None:
    """Point the broker's jar folder at one resolved once per checkout (Maven is slow to ask)."""
    shared = ROOT / ".gatewatch" / "reliability-jars"
    devkafka.resolve_jars(shared)
    state_dir.mkdir(parents=True, exist_ok=True)
    libs = state_dir / "libs"
    if not libs.exists():
        libs.symlink_to(shared / "libs", target_is_directory=True)


class FlakyStore:
    """A clickhouse-connect client whose calls fail while an outage is on; otherwise it delegates."""

    FAILING = frozenset({"insert", "raw_insert", "command", "query", "raw_query", "query_df", "insert_df"})

    def __init__(self, client: Any) -> None:
        self._client = client
        self._until = 0.0
        self._lock = threading.Lock()
        self.refused = 0

    def outage(self, seconds: float) -> None:
        """Fail every call for the next `seconds` seconds."""
        self._until = time.monotonic() + seconds

    @property
    def down(self) -> bool:
        return time.monotonic() < self._until

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if name not in self.FAILING or not callable(target):
            return target

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                with self._lock:
                    self.refused += 1
                from clickhouse_connect.driver.exceptions import OperationalError

                raise OperationalError("store unavailable (fault injected): connection refused")
            return target(*args, **kwargs)

        return guarded


class StageProcess:
    """One stage (`collector` or `pipeline`) in a child process, so it can be killed with SIGKILL."""

    def __init__(self, role: str, settings: Settings, log_path: Path) -> None:
        self.role, self.settings, self.log_path = role, settings, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0, env: dict[str, str] | None = None) -> None:
        """Spawn the child (with extra `env`) and wait for it to say it is ready."""
        payload = self.settings.model_dump(mode="json")
        payload["control_token"] = self.settings.control_token.get_secret_value()
        ready = self.log_path.with_suffix(f".{self.role}.ready")
        ready.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.child", self.role, json.dumps(payload), str(ready)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.role} child exited with {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.role} child not ready in {timeout_s:.0f}s: {self.tail()}")
            time.sleep(0.2)

    def wait_exit(self, timeout_s: float) -> int | None:
        """The child's exit code once it ends by itself, None if still running after `timeout_s`."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the graceful stop path."""
        if not self.process or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
