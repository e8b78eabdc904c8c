"""Forked worker processes: the shared rate-limit table holds one limit across processes, and the
worker pool forwards signals, restarts a worker that dies and gives up when they keep dying."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from proxy.ratelimit import LEASE_S, Gcra
from proxy.sharedlimits import PROBE, SharedTatTable

# Forked from a fresh interpreter, not from pytest: pytest's process has threads (Kafka clients,
# chDB) and at-fork hooks (the OpenTelemetry SDK's), and a child forked from it once deadlocked on a
# lock one of those threads held at the fork (waitpid then waited forever).
FORKS_SCRIPT = textwrap.dedent("""
    import os, sys
    from proxy.ratelimit import Gcra
    from proxy.sharedlimits import SharedTatTable

    def allowed_in_processes(processes, admitted):
        readers, pids = [], []
        for _ in range(processes):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                os.write(write, admitted().to_bytes(4, "big"))
                os._exit(0)
            os.close(write)
            readers.append(read)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        return sum(int.from_bytes(os.read(read, 4), "big") for read in readers)

    table = SharedTatTable(slots=64)
    if sys.argv[1] == "one_key":  # 1 per second, burst 5: 20 tries from 4 processes at one instant
        print(allowed_in_processes(4, lambda: sum(table.take(hash("client"), 1000.0, 1.0, 5.0)[0] for _ in range(5))))
        print(int(table.take(hash("other"), 1000.0, 1.0, 5.0)[0]))
        print(int(table.take(hash("client"), 1001.0, 1.0, 5.0)[0]))
    else:
        def worker():  # burst 1000: each worker builds its own limiter of the same name
            limiter = Gcra(1.0, 1000, shared=table, name="api")
            return sum(limiter.check("client", 1000.0).allowed for _ in range(800))
        print(allowed_in_processes(2, worker))
    table.close()
""")


def forked_counts(case: str) -> list[int]:
    """The numbers FORKS_SCRIPT prints for `case`, run in a new interpreter."""
    result = subprocess.run([sys.executable, "-c", FORKS_SCRIPT, case], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [int(line) for line in result.stdout.split()]


def test_one_key_is_limited_across_processes() -> None:
    allowed, other_key, a_second_later = forked_counts("one_key")
    assert allowed == 5  # exactly the burst
    assert other_key == 1  # another key is not affected
    assert a_second_later == 1  # one more a second later


def test_leases_of_a_big_burst_never_admit_more_than_the_burst_across_processes() -> None:
    (allowed,) = forked_counts("leases")
    # Every admitted unit was taken from the table (a lease is 1000 // 16 = 62 units); a worker that
    # stopped asking keeps at most one lease's units unused.
    assert 1000 - 2 * 62 <= allowed <= 1000


def test_a_lease_spares_the_table_lapses_after_its_time_and_small_bursts_are_exact() -> None:
    table = SharedTatTable(slots=64)
    takes: list[float] = []

    class CountedTable:  # the table, counting its takes
        def take(self, key_hash: int, now: float, interval: float, tolerance: float) -> tuple[bool, float]:
            takes.append(now)
            return table.take(key_hash, now, interval, tolerance)

    limiter = Gcra(1000.0, 1000, shared=CountedTable(), name="api")
    verdicts = [limiter.check("client", 5.0) for _ in range(62 * 3)]
    assert all(verdict.allowed for verdict in verdicts) and len(takes) == 3
    assert verdicts[0].remaining == 1000 - 1 and verdicts[-1].remaining == 1000 - 62 * 3
    limiter.check("client", 5.0 + LEASE_S)  # 61 units unused, but the lease has lapsed
    assert len(takes) == 4
    exact = Gcra(1.0, 31, shared=CountedTable(), name="small")  # 31 // 16 = 1: no leases, one take per check
    assert sum(exact.check("client", 5.0).allowed for _ in range(40)) == 31 and len(takes) == 4 + 40
    table.close()


def test_expired_slots_are_reused_and_a_full_window_never_wrongly_denies() -> None:
    table = SharedTatTable(slots=1)  # every key shares one probe window
    for key in range(PROBE + 3):  # more live keys than slots: the nearest to expiry is reused
        allowed, tat = table.take(key + 1, 10.0, 1.0, 1.0)
        assert allowed and tat == 10.0
    assert table.take(1, 20.0, 1.0, 1.0) == (True, 20.0)  # after expiry, a key starts fresh
    table.close()


WORKER_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from proxy.workers import WorkerPool
    out = Path(sys.argv[1])

    def work(index: int) -> int:
        (out / f"{index}-{os.getpid()}").write_text("up")
        signal.signal(signal.SIGHUP, lambda *_: (out / f"hup-{os.getpid()}").write_text("1"))
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        deadline = time.monotonic() + 30
        while not stop and time.monotonic() < deadline:
            time.sleep(0.02)
        return 0

    sys.exit(WorkerPool(2, work).run())
""")


def _wait(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert condition(), "timed out"  # type: ignore[operator]


def test_pool_forwards_signals_restarts_a_dead_worker_and_stops(tmp_path: Path) -> None:
    master = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(tmp_path)])
    try:
        def started() -> list[Path]:
            return sorted(p for p in tmp_path.iterdir() if not p.name.startswith("hup"))

        _wait(lambda: len(started()) == 2)
        pids = [int(p.name.split("-")[1]) for p in started()]
        master.send_signal(signal.SIGHUP)
        _wait(lambda: all((tmp_path / f"hup-{pid}").exists() for pid in pids))
        os.kill(pids[0], signal.SIGKILL)  # dies on its own: the master starts another with its index
        _wait(lambda: len(started()) == 3)
        master.send_signal(signal.SIGTERM)
        assert master.wait(15) == 0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()


def test_workers_that_keep_dying_make_the_master_fail(tmp_path: Path) -> None:
    script = ("import sys\nimport proxy.workers as w\nw.RESTART_PAUSE_S = 0.01\nw.MAX_RESTARTS = 2\n"
              "sys.exit(w.WorkerPool(1, lambda index: 3).run())")
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == 1
