"""Local processes for benchmarks: free ports, waiting for listeners, CPU and memory from /proc."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nothing listens on right now (for processes that need one up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 30.0) -> None:
    """Block until something accepts on 127.0.0.1:`port`; fail early if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_s_each(pids: Iterable[int]) -> list[float]:
    """utime + stime of each process (all its threads), in seconds, from /proc."""
    times = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        times.append((int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return times


def cpu_s(pids: Iterable[int]) -> float:
    """utime + stime of processes (all their threads) together, in seconds, from /proc."""
    return sum(cpu_s_each(pids))


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (e.g. wrk runs that have finished)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident set size now, its peak) of a process in MiB: VmRSS and VmHWM from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc."""
    return memory_mb(pid)[0]


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (e.g. nginx's workers), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    """SIGTERM each process (by its pid), wait for it, SIGKILL the ones that do not exit in time."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def missing_tools(*tools: str) -> str | None:
    """A one-line hint when a command-line tool the benchmark drives is not installed, else None."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return None
    return f"{' and '.join(missing)} missing: run `make debian-deps` (apt-get install {' '.join(missing)})"
