"""`run_until_signal`: a host process must not outlive a stage that died."""

from __future__ import annotations

import threading

from gatewatch.service import run_until_signal


class _Stage:
    def __init__(self, name: str, dies: bool) -> None:
        self.name, self.dies = name, dies
        self.error: BaseException | None = None
        self.stopped = False

    def start(self) -> None:
        if self.dies:  # its background thread fails a moment after a healthy start
            threading.Timer(0.2, self._die).start()

    def _die(self) -> None:
        self.error = RuntimeError("consumer thread died")

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stopped = True


def test_run_until_signal_stops_every_stage_when_one_dies():
    healthy, dying = _Stage("collector", dies=False), _Stage("pipeline", dies=True)
    assert run_until_signal([healthy, dying]) == ["pipeline"]
    assert healthy.stopped and dying.stopped
