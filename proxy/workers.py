"""Run a server as several forked worker processes (as nginx's `worker_processes`, Envoy's
`--concurrency`), each with its own event loop on a shared `SO_REUSEPORT` port.

One CPython process serves on one core at most; workers are how the gateway uses the others. The
master only supervises: it forwards SIGHUP (reload) and SIGTERM/SIGINT (drain and stop) to the
workers, restarts a worker that dies on its own (with a pause, and gives up when they keep dying),
and returns the exit code. It forks before any thread exists and keeps none, so every fork is safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

FATAL_EXIT = 2  # a worker that cannot start (config, port in use): restarting would not help
RESTART_PAUSE_S = 1.0
MAX_RESTARTS = 5  # within RESTART_WINDOW_S: then the master stops everything and fails
RESTART_WINDOW_S = 60.0
_FORWARDED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


class WorkerPool:
    """`count` forked processes each running `work(index)` (its return value is the exit code)."""

    def __init__(self, count: int, work: Callable[[int], int],
                 on_exit: Callable[[int], None] | None = None) -> None:
        if count < 1:
            raise ValueError("workers must be >= 1")
        self.count = count
        self.work = work
        self.on_exit = on_exit  # called with each ended worker's pid (e.g. to retire its metrics)
        self.pids: dict[int, int] = {}  # pid -> worker index
        self._stopping = False
        self._restarts: deque[float] = deque()

    def run(self) -> int:
        """Start the workers and supervise them until they have all stopped; the exit code."""
        if threading.active_count() > 1:
            raise RuntimeError("fork workers before starting threads")
        previous = {signum: signal.signal(signum, self._forward) for signum in _FORWARDED}
        try:
            for index in range(self.count):
                self._spawn(index)
            return self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: stop on SIGTERM/SIGINT, no reload, until its server installs handlers
            code = 1
            try:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = self.work(index)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.pids[pid] = index
        log.info("worker %d started (pid %d)", index, pid)

    def _supervise(self) -> int:
        failed = 0  # the exit code that ended the pool, when workers failed
        worst = 0
        while self.pids:
            pid, status = os.wait()  # signals interrupt it; their handler runs, then wait resumes
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            if self.on_exit is not None:
                self.on_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                # stopped by our SIGTERM before its server installed handlers: a clean stop too
                worst = max(worst, 0 if code in (-signal.SIGTERM, -signal.SIGINT) else abs(code))
                continue
            log.error("worker %d (pid %d) exited unexpectedly with %d", index, pid, code)
            if code == FATAL_EXIT or not self._may_restart():
                if code != FATAL_EXIT:
                    log.error("workers keep exiting (%d restarts in %.0f s): stopping", MAX_RESTARTS,
                              RESTART_WINDOW_S)
                failed = FATAL_EXIT if code == FATAL_EXIT else 1
                self._forward(signal.SIGTERM, None)
                continue
            time.sleep(RESTART_PAUSE_S)
            if not self._stopping:
                self._spawn(index)
        return failed or worst

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        self._restarts.append(now)
        return len(self._restarts) <= MAX_RESTARTS

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            self._stopping = True
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):  # already gone: nothing to tell it
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
