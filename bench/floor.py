"""Where the gateway's CPU per request goes, against floors measured in the same run (wrk, 32
connections, closed loop, each proxy in front of the same upstream nginx):

* nginx: the proxy nginx with one worker, as in bench/gateway.py;
* minimal: `bench.lib.minproxy`, the least a uvloop + httptools proxy does (a task per request,
  both directions parsed, the head rebuilt), with the same system calls as the gateway;
* engine: the gateway with no auth, rate limit or tracing (listener, routing, header rules, pooled
  upstream caller, metrics);
* gateway: the gateway as bench/gateway.py runs it (JWT, a rate limit, 100% tracing).

The differences say what costs what: minimal - nginx is the interpreter's floor, engine - minimal
the engine's own Python, gateway - engine the policies and spans. Prints a table and writes
bench/results/floor.json. Spans go to the upstream nginx's OTLP sink."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.gateway import (  # noqa: E402
    CONNECTIONS,
    DURATION_S,
    bearer_header,
    gateway_conf,
    measured,
    start_gateway,
    start_nginx_pair,
    wrk,
)
from bench.lib import nginx  # noqa: E402
from bench.lib.procs import free_port, missing_tools, stop, wait_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main() -> int:
    if (hint := missing_tools("wrk", "nginx")) is not None:
        print(hint, file=sys.stderr)
        return 1
    prefix = Path(tempfile.mkdtemp(prefix="gatewatch-bench-floor-"))
    upstream_port, otlp_port, nginx_port, minimal_port, engine_port, gateway_port, *admin_ports = (
        free_port() for _ in range(8))
    env = {**os.environ, "GATEWATCH_DATA_DIR": str(prefix / "data"),
           "GATEWATCH_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _, proxy_nginx = start_nginx_pair(prefix, upstream_port, otlp_port, nginx_port, processes)
        minimal = subprocess.Popen([str(ROOT / ".venv/bin/python"), "-m", "bench.lib.minproxy", str(minimal_port),
                                    str(upstream_port)], cwd=ROOT, env=env)
        processes.append(minimal)
        gateways = {}
        for name, port, admin_port, policies in (("engine", engine_port, admin_ports[0], False),
                                                 ("gateway", gateway_port, admin_ports[1], True)):
            conf = gateway_conf(prefix, upstream_port, port, admin_port, policies=policies)
            gateways[name] = start_gateway(conf, env, processes)
        for port, process in ((minimal_port, minimal), (engine_port, gateways["engine"]),
                              (gateway_port, gateways["gateway"])):
            wait_port(port, process)
        auth = bearer_header()
        targets = {  # name: (url, headers, serving pids)
            "nginx": (f"http://127.0.0.1:{nginx_port}/", [], nginx.worker_pids(proxy_nginx)),
            "minimal": (f"http://127.0.0.1:{minimal_port}/", [], [minimal.pid]),
            "engine": (f"http://127.0.0.1:{engine_port}/", [], [gateways["engine"].pid]),
            "gateway": (f"http://127.0.0.1:{gateway_port}/", auth, [gateways["gateway"].pid]),
        }
        load_before = os.getloadavg()
        for url, headers, _ in targets.values():
            wrk(url, 4, headers)  # warm-up: connections opened, caches filled
        peak = {name: measured(url, headers, pids) for name, (url, headers, pids) in targets.items()}
        load_after = os.getloadavg()
    finally:
        stop(reversed(processes))
        shutil.rmtree(prefix, ignore_errors=True)
    print(f"\nfloor benchmark: wrk -t1 -c{CONNECTIONS}, {DURATION_S}s per run, {os.cpu_count()} CPUs (shared); "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'target':<10}{'max rps':>10}{'vs nginx':>10}{'CPU us/req':>12}{'non-2xx':>9}")
    for name, result in peak.items():
        print(f"{name:<10}{result['rps']:>10.0f}{result['rps'] / peak['nginx']['rps']:>10.0%}"
              f"{result['cpu_us_per_request']:>12.1f}{result['non_2xx']:>9.0f}")
    cost = {name: result["cpu_us_per_request"] for name, result in peak.items()}
    steps = {"interpreter floor (minimal - nginx)": cost["minimal"] - cost["nginx"],
             "engine (engine - minimal)": cost["engine"] - cost["minimal"],
             "auth, rate limit, tracing (gateway - engine)": cost["gateway"] - cost["engine"]}
    for step, us in steps.items():
        print(f"{step:<46}{us:>+8.1f} us/req")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "floor.json").write_text(json.dumps({
        "duration_s": DURATION_S, "connections": CONNECTIONS, "peak": peak, "cpu_us_per_request": cost,
        "steps_us_per_request": steps, "load_average": {"before": load_before[0], "after": load_after[0]},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
