"""gatewatch.loopthread.LoopThread: the event-loop thread the gateway and sidecars run on."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gatewatch.errors import ConfigError, GatewatchError
from gatewatch.loopthread import LoopThread

pytestmark = pytest.mark.timeout(30)


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.events: list[str] = []
        self.cancelled = threading.Event()

    async def startup(self) -> None:
        self.events.append(f"startup on {threading.current_thread().name}")
        if self.fail is not None:
            raise self.fail

    async def shutdown(self, drain_s: float) -> None:
        self.events.append(f"shutdown {drain_s:g}")

    async def forever(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_runs_startup_on_its_thread_then_cancels_background_tasks_and_shuts_down() -> None:
    recorder = Recorder()
    runner = LoopThread("test-loop", recorder.startup, recorder.shutdown)
    runner.start()
    runner.spawn(recorder.forever())
    called = threading.Event()
    runner.call_soon(called.set)
    assert called.wait(5)
    assert runner.run(asyncio.sleep(0, result=42)) == 42
    runner.stop(drain_s=2)
    assert recorder.events == ["startup on test-loop", "shutdown 2"]
    assert recorder.cancelled.is_set()
    runner.call_soon(pytest.fail, "the loop is gone")  # ignored, as is a late spawn
    runner.spawn(recorder.forever())
    runner.stop()  # idempotent


def test_failed_startup_shuts_down_and_raises_one_gatewatch_error() -> None:
    recorder = Recorder(fail=OSError("address in use"))
    runner = LoopThread("broken", recorder.startup, recorder.shutdown)
    with pytest.raises(GatewatchError, match="broken could not start: address in use"):
        runner.start()
    assert recorder.events[-1] == "shutdown 1"
    assert runner.loop is None
    config_error = ConfigError("bad port")
    with pytest.raises(ConfigError) as raised:  # gatewatch errors already say what to fix: passed on as is
        LoopThread("x", Recorder(fail=config_error).startup, recorder.shutdown).start()
    assert raised.value is config_error
