"""Gateway benchmark with wrk, in one run: (a) the upstream direct, (b) Debian nginx (one worker) as
reverse proxy, (c) the gatewatch gateway with JWT auth, rate limiting and 100% tracing exported over
OTLP/HTTP, as one process and (d) as `workers: 2` processes (GATEWAY_BENCH_WORKERS; 1 skips it).
The upstream is an nginx process of its own that every target shares, so the proxy nginx's one worker
only proxies, as the gateway does (serving the upstream too cost it ~8 us a request: README, session 8).
Spans go to an OTLP sink in the upstream nginx (as in bench/sidecar.py): every span is encoded and
POSTed, and the gateway's `gatewatch_proxy_spans` counters show that none was dropped. (A collector
here would compete for the 2 cores, and with no pipeline behind it its embedded span log fills at
100k spans and then refuses them: it has bench/collector.py.)
Max throughput (closed loop), then latency at half of each gateway's max rate: requests
sent on one fixed-rate schedule shared by all connections (wrk's Lua `delay`, as wrk2 paces), and for
comparison with earlier reports, 8 connections each waiting a fixed delay, which keeps them in phase
so requests arrive in bursts of 8. nginx's own added latency on the paced schedule is printed as the
reference for what one proxy hop costs on the machine.
For reference, nginx is also paced at half of its own max, against direct at that rate: the p99
target at the same load for a C proxy (on this 2-vCPU machine nginx met the 2 ms bound there about
as often as the gateway did at its own half max: README, session 16).
Before the paced runs, one process spinning on each CPU counts the gaps the machine leaves in it
(bench/lib/stalls.py): the noise the paced rounds meet.
Before the paced runs each proxy serves the paced run's connection count in a 2 s closed-loop run
that is not measured. The max-rate phase uses 32 connections, so without it a proxy's
first paced run grew its upstream pool from 32 to ~170 connections at the first stall, each new one
34-46 us of the gateway's CPU (mostly the kernel's connect over loopback; README, session 15), and
that round's p99 measured the pool's growth rather than the steady state.
The max-rate and paced runs are repeated in ROUNDS rounds (GATEWAY_BENCH_ROUNDS, default 3; the
order reverses each round): the table shows each figure's median over the rounds, and each verdict
pairs a run with its baseline of the same round (gateway with nginx, gateway with direct) and takes
the median of the pairs. One 6 s run on this 2-core machine swung the gateway/nginx ratio from 45%
to 55% and the added p99 from +1.6 to +18 ms, which was the machine's noise, not the proxies'. Every
round is in the JSON. Prints a table and writes bench/results/gateway.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.lib import nginx, stalls  # noqa: E402
from bench.lib import wrk as wrk_run  # noqa: E402
from bench.lib.procs import child_pids, cpu_s, free_port, missing_tools, rss_mb, stop, wait_port  # noqa: E402
from bench.lib.wrk import paced_script, scheduled_connections, scheduled_script  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DURATION_S = int(os.environ.get("GATEWAY_BENCH_SECONDS", "6"))
WORKERS = int(os.environ.get("GATEWAY_BENCH_WORKERS", "2"))
ROUNDS = max(1, int(os.environ.get("GATEWAY_BENCH_ROUNDS", "3")))
CONNECTIONS = 32
PACED_CONNECTIONS = 8
STALL_PROBE_S = 5.0
SPAN_DRAIN_S = 2.0  # > the proxies' 0.2 s export delay: every partial batch has gone out
SECRET = b"bench-secret-of-thirty-two-bytes"


def proxy_conf(prefix: Path, upstream_port: int, proxy_port: int) -> Path:
    """The proxy nginx (one worker): a keep-alive reverse proxy to the upstream, nothing else. It
    keeps as many idle upstream connections as the gateway does (1024 per endpoint): with 64, the
    paced phase's ~128 connections made both proxies close and reopen upstream connections."""
    return nginx.write_conf(prefix, f"""
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 1024; }}
  server {{
    listen 127.0.0.1:{proxy_port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}
  }}""")


def gateway_conf(prefix: Path, upstream_port: int, port: int, admin_port: int, workers: int = 1,
                 policies: bool = True) -> Path:
    """The benched gateway: JWT auth, a rate limit and 100% tracing (`policies=False`: none of them)."""
    jwks = prefix / "jwks.json"
    key = jwt.utils.base64url_encode(SECRET).decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "bench", "alg": "HS256", "k": key}]}))
    conf = prefix / f"gateway-{workers}{'' if policies else '-bare'}.yaml"
    route_policies = "\n    auth: {provider: users, scopes: [read]}\n    rate_limit: generous" if policies else ""
    conf.write_text(f"""
listen_port: {port}
admin_port: {admin_port}
workers: {workers}
tracing: {{enabled: {str(policies).lower()}, sample_ratio: 1.0, service_name: bench-gateway}}
upstreams:
  app: {{endpoints: ["127.0.0.1:{upstream_port}"]}}
auth:
  users: {{type: jwt, jwks_file: {jwks}, issuer: bench, audience: gatewatch}}
rate_limits:
  generous: {{rate_per_s: 1000000, burst: 1000000, key: subject}}
routes:
  - name: api
    match: {{prefix: /}}
    upstream: app{route_policies}
""")
    return conf


Process = subprocess.Popen[bytes]


def start_nginx_pair(prefix: Path, upstream_port: int, otlp_port: int, proxy_port: int,
                     processes: list[Process]) -> tuple[Process, Process]:
    """The upstream + OTLP sink nginx (in `prefix/upstream`) and the proxy nginx (in `prefix/proxy`),
    started and appended to `processes`."""
    upstream_prefix, proxy_prefix = prefix / "upstream", prefix / "proxy"
    for directory in (upstream_prefix, proxy_prefix):
        directory.mkdir()
    upstream = nginx.start(upstream_prefix, nginx.upstream_conf(upstream_prefix, upstream_port, otlp_port),
                           [upstream_port, otlp_port])
    processes.append(upstream)
    proxy = nginx.start(proxy_prefix, proxy_conf(proxy_prefix, upstream_port, proxy_port), [proxy_port])
    processes.append(proxy)
    return upstream, proxy


def start_gateway(conf: Path, env: dict[str, str], processes: list[Process]) -> Process:
    """`gatewatch gateway --config conf`, started and appended to `processes`."""
    gateway = subprocess.Popen([str(ROOT / ".venv/bin/gatewatch"), "gateway", "--config", str(conf)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    processes.append(gateway)
    return gateway


def bearer_header() -> list[str]:
    """wrk's `-H` for a token the benched gateway accepts (valid for an hour)."""
    token = jwt.encode({"sub": "bench-user", "iss": "bench", "aud": "gatewatch", "scope": "read",
                        "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256", headers={"kid": "bench"})
    return [f"Authorization: Bearer {token}"]


def wrk(url: str, connections: int, headers: list[str], script: Path | None = None) -> dict[str, float]:
    """Run wrk for DURATION_S; requests/s and latency percentiles in ms."""
    return wrk_run.run(url, connections, DURATION_S, headers, script)


def schedule_at(prefix: Path, rate: float) -> tuple[Path, int]:
    """wrk's Lua schedule for `rate` requests/s and the connection count it runs over."""
    return scheduled_script(prefix, rate), scheduled_connections(rate)


def warm_up(url: str, connections: int, headers: list[str]) -> None:
    """An unmeasured 2 s closed-loop run with `connections`: the proxy's upstream pool grows to that
    many, as it would in the first seconds of any steady load (the module docstring says why)."""
    wrk_run.run(url, connections, 2, headers)


def measured(url: str, headers: list[str], pids: list[int], connections: int = CONNECTIONS,
             script: Path | None = None) -> dict[str, float]:
    """One wrk run (closed loop at max rate, or paced by `script`), plus the CPU the serving
    processes spent per request (us)."""
    before = cpu_s(pids)
    result = wrk(url, connections, headers, script)
    requests = result["rps"] * DURATION_S
    result["cpu_us_per_request"] = (cpu_s(pids) - before) / requests * 1e6 if requests else 0.0
    return result


Run = dict[str, float]


def in_rounds(names: list[str], run: Callable[[str], Run]) -> tuple[dict[str, Run], dict[str, list[Run]]]:
    """`run(name)` for every name in ROUNDS rounds, the order reversed each round (so that a drift
    in the machine's speed falls on all names alike): each figure's median by name, and every run."""
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for round_index in range(ROUNDS):
        for name in names if round_index % 2 == 0 else reversed(names):
            runs[name].append(run(name))
    return {name: _combined(results) for name, results in runs.items()}, runs


# Counts that add up over rounds: a round's errors must not vanish under a median.
_SUMMED = frozenset({"requests", "non_2xx", "socket_errors"})


def _combined(results: list[Run]) -> Run:
    """One name's rounds as one result: counts summed, every other figure the median."""
    return {key: sum(result[key] for result in results) if key in _SUMMED
            else statistics.median(result[key] for result in results) for key in results[0]}


def main() -> int:
    if (hint := missing_tools("wrk", "nginx")) is not None:
        print(hint, file=sys.stderr)
        return 1
    prefix = Path(tempfile.mkdtemp(prefix="gatewatch-bench-gw-"))
    upstream_port, nginx_port, gw_port, admin_port, otlp_port, gw2_port, admin2_port = (free_port() for _ in range(7))
    env = {**os.environ, "GATEWATCH_DATA_DIR": str(prefix / "data"), "GATEWATCH_OTLP_ENDPOINT":
           f"http://127.0.0.1:{otlp_port}"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        upstream_process, nginx_process = start_nginx_pair(prefix, upstream_port, otlp_port, nginx_port, processes)
        upstream_prefix = prefix / "upstream"
        gateway = start_gateway(gateway_conf(prefix, upstream_port, gw_port, admin_port), env, processes)
        multi = None
        if WORKERS > 1:
            multi = start_gateway(gateway_conf(prefix, upstream_port, gw2_port, admin2_port, WORKERS), env, processes)
        for port in (gw_port, *([gw2_port] if multi else [])):
            wait_port(port)
        auth = bearer_header()
        targets = {
            "direct": (f"http://127.0.0.1:{upstream_port}/", []),
            "nginx": (f"http://127.0.0.1:{nginx_port}/", []),
            "gatewatch": (f"http://127.0.0.1:{gw_port}/", auth),
        }
        multi_name = f"gatewatch-{WORKERS}w"
        if multi is not None:
            targets[multi_name] = (f"http://127.0.0.1:{gw2_port}/", auth)
        load_before = os.getloadavg()
        wrk(targets["gatewatch"][0], 4, auth)  # warm-up: connections, JIT-free but caches filled
        if multi is not None:
            wrk(targets[multi_name][0], 8, auth)
        workers = nginx.worker_pids(nginx_process)
        # CPU per request: each target's own serving processes (the gateway: event loop + span export thread)
        serving = {"direct": nginx.worker_pids(upstream_process), "nginx": workers, "gatewatch": [gateway.pid]}
        if multi is not None:  # the master only supervises: its workers are its children
            serving[multi_name] = child_pids(multi.pid)
        peak, peak_rounds = in_rounds(list(targets), lambda name: measured(*targets[name], serving[name]))
        rate = peak["gatewatch"]["rps"] / 2
        cpu_stalls = stalls.measure(STALL_PROBE_S)  # the machine's own noise, next to the paced rounds
        schedule, scheduled_conns = schedule_at(prefix, rate)
        single = {name: target for name, target in targets.items() if name != multi_name}
        for name in ("nginx", "gatewatch"):  # the proxies: direct has no upstream pool to grow
            warm_up(targets[name][0], scheduled_conns, targets[name][1])
        paced, paced_rounds = in_rounds(list(single), lambda name: measured(*single[name], serving[name],
                                                                              scheduled_conns, schedule))
        # nginx at half of its own max: what the p99 target means for a C proxy loaded as the gateway is
        nginx_rate = peak["nginx"]["rps"] / 2
        nginx_schedule, nginx_conns = schedule_at(prefix, nginx_rate)
        warm_up(targets["nginx"][0], nginx_conns, [])
        _, own_half_rounds = in_rounds(["direct", "nginx"], lambda name: measured(
            *targets[name], serving[name], nginx_conns, nginx_schedule))
        in_phase = paced_script(prefix, rate, PACED_CONNECTIONS)
        bursts = {name: wrk(url, PACED_CONNECTIONS, headers, in_phase) for name, (url, headers) in single.items()}
        multi_paced: dict[str, dict[str, float]] = {}
        if multi is not None:  # the same at half of the multi-worker gateway's own max, against direct
            multi_rate = peak[multi_name]["rps"] / 2
            schedule, conns = schedule_at(prefix, multi_rate)
            warm_up(targets[multi_name][0], conns, targets[multi_name][1])
            multi_paced = {name: wrk(targets[name][0], conns, targets[name][1], schedule)
                           for name in ("direct", multi_name)}
        time.sleep(SPAN_DRAIN_S)  # the last partial export batches
        spans = {"gatewatch": span_outcomes(admin_port)}
        if multi is not None:
            spans[multi_name] = span_outcomes(admin2_port)
        sink = nginx.sink_batches(upstream_prefix)
        gateway_rss = rss_mb(gateway.pid)
        multi_rss = sum(rss_mb(pid) for pid in serving[multi_name]) if multi is not None else 0.0
        nginx_rss = rss_mb(nginx_process.pid) + sum(rss_mb(pid) for pid in workers)
        load_after = os.getloadavg()
    finally:
        stop(reversed(processes))
        shutil.rmtree(prefix, ignore_errors=True)
    # The verdicts pair each run with its baseline of the same round, then take the median
    ratios = vs_nginx(peak_rounds, "gatewatch")
    added_p50s, added_p99s = (over_direct(paced_rounds, "gatewatch", key) for key in ("p50_ms", "p99_ms"))
    ratio, added_p50, added_p99 = map(statistics.median, (ratios, added_p50s, added_p99s))
    # nginx on the same schedule: how much of the budget one proxy hop costs on this machine at all
    nginx_p50, nginx_p99 = (statistics.median(over_direct(paced_rounds, "nginx", key)) for key in ("p50_ms", "p99_ms"))
    own_half = {"p50": over_direct(own_half_rounds, "nginx", "p50_ms"),
                "p99": over_direct(own_half_rounds, "nginx", "p99_ms")}
    own_half_p50, own_half_p99 = statistics.median(own_half["p50"]), statistics.median(own_half["p99"])
    burst_p50 = bursts["gatewatch"]["p50_ms"] - bursts["direct"]["p50_ms"]
    burst_p99 = bursts["gatewatch"]["p99_ms"] - bursts["direct"]["p99_ms"]
    print(f"\ngateway benchmark: wrk -t1, {DURATION_S}s per run, {os.cpu_count()} CPUs (shared); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; max and paced: medians of {ROUNDS} rounds")
    print(f"{'target':<14}{'max rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>11}   |"
          f"{'paced rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>11}   |"
          f"{'burst rps':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name in single:
        a, b, c = peak[name], paced[name], bursts[name]
        print(f"{name:<14}{a['rps']:>10.0f}{a.get('p50_ms', 0):>9.2f}{a.get('p99_ms', 0):>9.2f}"
              f"{a['cpu_us_per_request']:>11.1f}   |"
              f"{b['rps']:>10.0f}{b.get('p50_ms', 0):>9.2f}{b.get('p99_ms', 0):>9.2f}"
              f"{b['cpu_us_per_request']:>11.1f}   |"
              f"{c['rps']:>10.0f}{c.get('p50_ms', 0):>9.2f}{c.get('p99_ms', 0):>9.2f}")
    print("CPU us/req: direct = the upstream nginx serving 'ok'; nginx = the proxy nginx's worker; "
          "gatewatch = the gateway process. Paced, a request costs more than at max rate (fewer per loop "
          "pass, caches colder after each sleep): at the paced rate the gateway was busy "
          f"{busy_percent(paced_rounds['gatewatch']):.0f}% of the time, which sets how fast it "
          "catches up after a stall")
    print(f"paced: {rate:.0f} rps (half of the gateway's max) on one schedule over {scheduled_conns} connections; "
          f"burst: {PACED_CONNECTIONS} connections each waiting a fixed delay (in phase, so in bursts)")
    print(f"gateway/nginx throughput: {ratio:.1%} (target >= 50%)")
    print(f"added latency over direct at half max rate: p50 {added_p50:+.2f} ms (target <= 0.5), "
          f"p99 {added_p99:+.2f} ms (target <= 2); in bursts of {PACED_CONNECTIONS}: p50 {burst_p50:+.2f} ms, "
          f"p99 {burst_p99:+.2f} ms")
    print(f"reference: nginx on the same schedule adds p50 {nginx_p50:+.2f} ms, p99 {nginx_p99:+.2f} ms "
          f"(busy {busy_percent(paced_rounds['nginx']):.0f}%)")
    print(f"reference: nginx at half of its own max ({nginx_rate:.0f} rps, "
          f"busy {busy_percent(own_half_rounds['nginx']):.0f}%) adds p50 {own_half_p50:+.2f} ms, "
          f"p99 {own_half_p99:+.2f} ms (by round: "
          + ", ".join(f"{p99:+.2f}" for p99 in own_half["p99"]) + ")")
    print(stalls.summary(cpu_stalls, STALL_PROBE_S))
    if ROUNDS > 1:
        print("by round: gateway/nginx " + ", ".join(f"{value:.1%}" for value in ratios) + "; added p50/p99 "
              + ", ".join(f"{p50:+.2f}/{p99:+.2f}" for p50, p99 in zip(added_p50s, added_p99s, strict=True)) + " ms")
    print(f"RSS: gateway {gateway_rss:.0f} MiB, proxy nginx (master+worker) {nginx_rss:.0f} MiB")
    errors = (peak["gatewatch"]["non_2xx"], paced["gatewatch"]["non_2xx"])
    print(f"non-2xx from the gateway: {errors[0]:.0f} peak, {errors[1]:.0f} paced")
    print(f"spans by export outcome: {spans}; OTLP batches at the sink by status: {sink}")
    multi_summary = None
    if multi_paced:
        multi_ratio = statistics.median(vs_nginx(peak_rounds, multi_name))
        multi_summary = _multi_summary(multi_name, peak, multi_ratio, multi_paced, multi_rss)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps({
        "duration_s": DURATION_S, "connections": CONNECTIONS, "paced_connections": PACED_CONNECTIONS,
        "rounds": ROUNDS, "peak": peak, "peak_rounds": peak_rounds, "paced_rounds": paced_rounds,
        "paced_rate_rps": rate, "paced_connections_scheduled": scheduled_conns, "paced": paced,
        "bursts": bursts, "throughput_vs_nginx": ratio,
        "throughput_vs_nginx_by_round": ratios,
        "added_latency_ms_by_round": {"p50": added_p50s, "p99": added_p99s},
        "added_latency_ms": {"p50": added_p50, "p99": added_p99},
        "added_latency_in_bursts_ms": {"p50": burst_p50, "p99": burst_p99},
        "nginx_added_latency_ms": {"p50": nginx_p50, "p99": nginx_p99},
        "nginx_at_own_half_max": {
            "rate_rps": nginx_rate, "busy_percent": busy_percent(own_half_rounds["nginx"]),
            "added_latency_ms": {"p50": own_half_p50, "p99": own_half_p99},
            "added_latency_ms_by_round": own_half, "rounds": own_half_rounds,
        },
        "cpu_stalls": stalls.as_json(cpu_stalls),
        "busy_percent_paced": {name: busy_percent(paced_rounds[name]) for name in ("nginx", "gatewatch")},
        "rss_mb": {"gateway": gateway_rss, "nginx": nginx_rss},
        "load_average": {"before": load_before[0], "after": load_after[0]},
        "cpu_us_per_request": {name: peak[name]["cpu_us_per_request"] for name in targets},
        "paced_cpu_us_per_request": {name: paced[name]["cpu_us_per_request"] for name in single},
        "workers": multi_summary, "spans": spans, "otlp_sink_batches": sink,
        "targets": {"throughput_vs_nginx": 0.5, "added_p50_ms": 0.5, "added_p99_ms": 2.0},
    }, indent=2))
    return 0


def by_round(runs: dict[str, list[Run]], name: str, base: str, figure: Callable[[Run, Run], float]) -> list[float]:
    """`figure(run, base_run)` for each round: `name`'s run against `base`'s run of the same round."""
    return [figure(run, base_run) for run, base_run in zip(runs[name], runs[base], strict=True)]


def vs_nginx(runs: dict[str, list[Run]], name: str) -> list[float]:
    """`name`'s max requests/s over nginx's in the same round, for each round."""
    return by_round(runs, name, "nginx", lambda run, base: run["rps"] / base["rps"])


def over_direct(runs: dict[str, list[Run]], name: str, key: str) -> list[float]:
    """The latency `name` adds over the direct run of the same round, for each round (ms)."""
    return by_round(runs, name, "direct", lambda run, base: run[key] - base[key])


def busy_percent(runs: list[Run]) -> float:
    """The median share of one CPU the serving processes used over `runs` (%)."""
    return statistics.median(run["cpu_us_per_request"] * run["rps"] / 1e4 for run in runs)


def span_outcomes(admin_port: int) -> dict[str, float]:
    """The gateway's `gatewatch_proxy_spans` counters by outcome (exported, failed, dropped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {match[1]: float(match[2]) for match in re.finditer(
        r'^gatewatch_proxy_spans_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE)}


def _multi_summary(name: str, peak: dict[str, Run], ratio: float, paced: dict[str, Run],
                   rss: float) -> dict[str, object]:
    """Print the multi-worker gateway's rows (its max, its paired ratio to nginx, and latency at half
    of its max); the JSON part."""
    a, b, direct = peak[name], paced[name], paced["direct"]
    added = {"p50": b["p50_ms"] - direct["p50_ms"], "p99": b["p99_ms"] - direct["p99_ms"]}
    print(f"\n{name}: the same gateway config with `workers: {WORKERS}` (SO_REUSEPORT, shared rate limits)")
    print(f"{name:<14}{a['rps']:>10.0f}{a.get('p50_ms', 0):>9.2f}{a.get('p99_ms', 0):>9.2f}"
          f"{a['cpu_us_per_request']:>11.1f}   |{b['rps']:>10.0f}{b.get('p50_ms', 0):>9.2f}{b.get('p99_ms', 0):>9.2f}"
          f"   | direct at that rate: p50 {direct['p50_ms']:.2f}, p99 {direct['p99_ms']:.2f} ms")
    print(f"{name}/nginx throughput: {ratio:.1%} (target >= 50%); added latency at half its max: "
          f"p50 {added['p50']:+.2f} ms, p99 {added['p99']:+.2f} ms; RSS of its workers {rss:.0f} MiB; "
          f"non-2xx {a['non_2xx']:.0f} peak, {b['non_2xx']:.0f} paced")
    return {"workers": WORKERS, "peak": a, "paced_rate_rps": a["rps"] / 2, "paced": paced,
            "throughput_vs_nginx": ratio, "added_latency_ms": added, "rss_mb": rss}


if __name__ == "__main__":
    sys.exit(main())
