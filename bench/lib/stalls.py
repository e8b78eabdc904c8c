"""How often the machine takes a CPU away from a process that wants it: one spinning process per CPU
reads the monotonic clock in a loop and counts the gaps. On an idle 2-vCPU VM here a C spinner saw
3-7 ms gaps; with both vCPUs busy, a vCPU lost 2-5 ms every 0.4-4 s (README, session 16). A proxy
at half its max rate is ~50-60% busy and needs about as long again to catch up after such a gap,
which is what its p99 measures on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

# Runs in each spinner process: pinned to its CPU, it records every gap of over 0.5 ms between two
# clock reads (a Python loop pass is ~0.1 us, so a longer gap is time the process did not run).
_SPINNER = """
import json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
clock = time.perf_counter
last = start = clock()
end = start + float(sys.argv[2])
gaps = []
while last < end:
    now = clock()
    if now - last > 0.0005:
        gaps.append(now - last)
    last = now
print(json.dumps(gaps))
"""


@dataclass(frozen=True)
class Stalls:
    """One CPU's gaps over a spin: how many were 1 ms or longer, 2 ms or longer, the longest, and
    the time they took together (ms)."""

    cpu: int
    at_least_1ms: int
    at_least_2ms: int
    longest_ms: float
    lost_ms: float


def measure(seconds: float) -> list[Stalls]:
    """Spin on every CPU this process may use, all at once, for `seconds`; each CPU's stalls."""
    cpus = sorted(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", _SPINNER, str(cpu), str(seconds)], stdout=subprocess.PIPE)
                for cpu in cpus]
    results = []
    for cpu, spinner in zip(cpus, spinners, strict=True):
        output, _ = spinner.communicate(timeout=seconds + 30)
        if spinner.returncode != 0:
            raise RuntimeError(f"the stall probe on cpu{cpu} exited with {spinner.returncode}")
        gaps_ms = [gap * 1000 for gap in json.loads(output)]
        results.append(Stalls(cpu, sum(gap >= 1 for gap in gaps_ms), sum(gap >= 2 for gap in gaps_ms),
                              max(gaps_ms, default=0.0), float(sum(gaps_ms))))
    return results


def summary(stalls: list[Stalls], seconds: float) -> str:
    """One line for a benchmark's report."""
    each_cpu = "; ".join(f"cpu{one.cpu} {one.at_least_1ms} / {one.at_least_2ms}, {one.longest_ms:.1f} ms"
                         for one in stalls)
    return f"CPU stalls with every CPU busy ({seconds:g} s; gaps of 1 ms or more / 2 ms or more, longest): {each_cpu}"


def as_json(stalls: list[Stalls]) -> list[dict[str, float]]:
    """The stalls for a benchmark's JSON."""
    return [asdict(each) for each in stalls]
