"""wrk (the C HTTP load generator, Debian package) runs and their parsed output, plus the Lua scripts
that pace it."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def run(url: str, connections: int, duration_s: int, headers: list[str] | None = None,
        script: Path | None = None, threads: int = 1) -> dict[str, float]:
    """Run `wrk -t<threads>` for `duration_s`: requests/s, latency percentiles (ms), non-2xx and socket errors."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", url]
    for header in headers or []:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration_s + 30).stdout
    return parse(output)


def parse(output: str) -> dict[str, float]:
    """The figures of one wrk report (`--latency`); latencies in ms."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{output}")
    result = {"rps": float(rps.group(1))}
    requests = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    result["requests"] = float(requests.group(1)) if requests else 0.0
    for percentile in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match:
            result[f"p{percentile}_ms"] = float(match.group(1)) * _UNIT_MS[match.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    socket_errors = _SOCKET_ERRORS.search(output)
    result["socket_errors"] = float(sum(int(n) for n in socket_errors.groups())) if socket_errors else 0.0
    return result


def paced_script(prefix: Path, rate: float, connections: int) -> Path:
    """wrk Lua: each connection waits connections/rate ms between requests (closed loop per
    connection, so the achieved rate is below `rate` by the latency's share of the period)."""
    script = prefix / f"paced_{int(rate)}.lua"
    script.write_text(f"function delay() return {max(1, int(1000 * connections / rate))} end\n")
    return script


# wrk's LuaJIT reaches clock_gettime(CLOCK_MONOTONIC) through its FFI: Lua itself has no clock finer
# than a second, and the schedule below needs milliseconds.
_SCHEDULED = """local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local now = ffi.new("bench_timespec")
local interval_ms = {interval_ms!r}
local due_ms = nil

function delay()
  ffi.C.clock_gettime(1, now)
  local now_ms = tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
  if due_ms == nil or due_ms < now_ms - 1000 then due_ms = now_ms end
  local wait_ms = due_ms - now_ms
  due_ms = due_ms + interval_ms
  if wait_ms < 0 then return 0 end
  return math.floor(wait_ms + 0.5)
end
"""


def scheduled_connections(rate: float, period_s: float = 0.008) -> int:
    """Connections for `scheduled_script` at `rate`: each idles ~`period_s` between its requests."""
    return max(2, math.ceil(rate * period_s))


def scheduled_script(prefix: Path, rate: float, threads: int = 1) -> Path:
    """wrk Lua: request send times on one schedule of `rate` per second shared by all connections
    (as wrk2 does); a connection waits for the next free slot, late slots are sent at once. Each wrk
    thread has its own Lua state, so with `threads` each keeps a schedule of `rate / threads`."""
    script = prefix / f"scheduled_{int(rate)}_{threads}.lua"
    script.write_text(_SCHEDULED.format(interval_ms=1000.0 * threads / rate))
    return script
