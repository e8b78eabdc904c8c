"""Sidecar overhead: latency added per hop at fixed request rates, RSS and CPU per sidecar.

Path: load generator -> sidecar A (outbound, plain loopback) -> sidecar B (inbound, plain or mTLS)
-> server, against the baseline in the same invocation: load generator -> server directly. Two
proxies sit on the path, so "per hop" = (proxied - direct) / 2, for p50 and p99.
Load is open loop at fixed rates (500 and 2,000 requests/s, requests sent on schedule on as many
keep-alive connections as needed); latency is measured from each request's send to its response.
Sidecars are `gatewatch sidecar` subprocesses with 100% tracing exported over OTLP/HTTP to a sink;
RSS is VmRSS/VmHWM from /proc/<pid>/status (idle = once listening, before any traffic), CPU is
utime+stime from /proc/<pid>/stat.
Targets: per hop p50 <= 0.5 ms, p99 <= 2 ms; RSS <= 30 MB. For scale: 1-2 ms per hop is commonly
quoted for service meshes; Linkerd's proxy uses ~26 MB, Istio's ~156 MB (Linkerd 2021 benchmark).

Writes bench/results/sidecar.json. Environment: SIDECAR_BENCH_SECONDS (default 5 per measurement).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import httptools

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.test_sidecar_support import free_port, make_pki, wait_listening  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DURATION_S = float(os.environ.get("SIDECAR_BENCH_SECONDS", "5"))
WARMUP_S = 1.0
RATES = (500, 2000)
MAX_CONNECTIONS = 256
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"hop_p50_ms": 0.5, "hop_p99_ms": 2.0, "rss_mb": 30.0}
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


# ---------------------------------------------------------------- upstream server (subprocess)
class _ServerProtocol(asyncio.Protocol):
    """Answers every request with a tiny 200 (also serves as the OTLP sink)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSE)


def serve(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_ServerProtocol, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------- load generator
class _ClientProtocol(asyncio.Protocol):
    def __init__(self, done: Any) -> None:
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.sent_at = 0.0
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.done(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def _open_loop(port: int, host_header: str, rate: int, duration_s: float) -> dict[str, Any]:
    """Send `rate` requests/s on schedule for `duration_s`; latencies (ms) of the answered ones."""
    loop = asyncio.get_running_loop()
    request = f"GET /bench HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: bench\r\n\r\n".encode()
    idle: deque[_ClientProtocol] = deque()
    latencies: list[float] = []
    errors = 0
    outstanding = 0
    connections = 0

    def done(conn: _ClientProtocol, status: int) -> None:
        nonlocal outstanding, errors
        outstanding -= 1
        if status == 200:
            latencies.append((time.perf_counter() - conn.sent_at) * 1000.0)
        else:
            errors += 1
        idle.append(conn)

    async def connection() -> _ClientProtocol | None:
        nonlocal connections
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        if connections >= MAX_CONNECTIONS:
            return None
        connections += 1
        _, conn = await loop.create_connection(lambda: _ClientProtocol(done), "127.0.0.1", port)
        conn.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    total = int(rate * duration_s)
    start = time.perf_counter()
    sent = dropped = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            conn = await connection()
            sent += 1
            if conn is None:
                dropped += 1  # every connection busy: the system cannot keep up with this rate
                continue
            outstanding += 1
            conn.sent_at = time.perf_counter()
            conn.transport.write(request)
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    give_up = time.perf_counter() + 5.0
    while outstanding > 0 and time.perf_counter() < give_up:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.01)
    for conn in idle:
        conn.transport.close()
    return {"latencies": latencies, "errors": errors + outstanding + dropped, "sent": sent,
            "achieved_rps": len(latencies) / (time.perf_counter() - start)}


def measure(port: int, host_header: str, rate: int) -> dict[str, Any]:
    import uvloop

    uvloop.run(_open_loop(port, host_header, rate, WARMUP_S))
    result = uvloop.run(_open_loop(port, host_header, rate, DURATION_S))
    values = sorted(result.pop("latencies"))
    if not values:
        return {**result, "p50_ms": float("nan"), "p99_ms": float("nan")}
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return {**result, "p50_ms": statistics.median(values), "p99_ms": p99}


# ---------------------------------------------------------------- processes
def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_mem_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024.0
    return values["VmRSS"], values["VmHWM"]


def sidecar_yaml(service: str, inbound: int, forward_to: int, outbound: int, callee_port: int,
                 pki: Path | None) -> str:
    tls = (f"{{enabled: true, ca: {pki}/ca.pem, cert: {pki}/{service}.pem, key: {pki}/{service}.key}}"
           if pki else "{enabled: false}")
    return (f"service: {service}\ninbound: {{port: {inbound}, forward_to: '127.0.0.1:{forward_to}'}}\n"
            f"outbound: {{port: {outbound}}}\ntls: {tls}\n"
            f"services:\n  server: {{endpoints: ['127.0.0.1:{callee_port}']}}\n"
            "tracing: {enabled: true, sample_ratio: 1.0}\n")


def start_sidecar(workdir: Path, service: str, yaml_text: str, sink_port: int) -> subprocess.Popen[bytes]:
    path = workdir / f"{service}.yaml"
    path.write_text(yaml_text)
    env = {**os.environ, "GATEWATCH_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}", "GATEWATCH_CONTROL_PLANE_URL": ""}
    gatewatch = str(Path(sys.executable).parent / "gatewatch")
    # Logs to a file: an unread stderr pipe fills up and blocks a sidecar that logs errors.
    with (workdir / f"{service}.log").open("wb") as log:
        return subprocess.Popen([gatewatch, "sidecar", "--service", service, "--config", str(path),
                                 "--data-dir", str(workdir)], env=env, stdout=subprocess.DEVNULL, stderr=log)


def logged_errors(workdir: Path, *services: str) -> int:
    """ERROR records the sidecars logged (handshake failures, handler errors): 0 in a clean run."""
    return sum((workdir / f"{service}.log").read_text(errors="replace").count(" ERROR ") for service in services)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_mesh(workdir: Path, server_port: int, sink_port: int, pki: Path | None) -> dict[str, Any]:
    """Start caller + callee sidecars, measure every rate, report latency, RSS and CPU."""
    a_out, a_in, b_in, b_out = free_port(), free_port(), free_port(), free_port()
    callee = start_sidecar(workdir, "server", sidecar_yaml("server", b_in, server_port, b_out, 1, pki), sink_port)
    caller = start_sidecar(workdir, "client", sidecar_yaml("client", a_in, 1, a_out, b_in, pki), sink_port)
    processes = (caller, callee)
    try:
        for port, process in ((b_in, callee), (a_out, caller)):
            wait_listening(port, process)
        # Idle RSS (started, no traffic yet): the import cost, before connections and buffers add to it.
        results: dict[str, Any] = {"idle_rss_mb": max(proc_mem_mb(p.pid)[0] for p in processes)}
        for rate in RATES:
            cpu_before = [proc_cpu_s(p.pid) for p in processes]
            started = time.perf_counter()
            results[str(rate)] = measure(a_out, "server", rate)
            elapsed = time.perf_counter() - started
            cpu = [proc_cpu_s(p.pid) - before for p, before in zip(processes, cpu_before, strict=True)]
            # Cores one sidecar uses per 1,000 requests/s (warm-up included in both CPU and time).
            results[str(rate)]["cpu_cores_per_1k_rps"] = max(cpu) / elapsed / (rate / 1000.0)
            # RSS after each rate: an overloaded rate opens many connections (TLS buffers) and grows it.
            results[str(rate)]["rss_mb"] = max(proc_mem_mb(p.pid)[0] for p in processes)
        rss = [proc_mem_mb(p.pid) for p in processes]
        results["rss_mb"] = max(r[0] for r in rss)
        results["peak_rss_mb"] = max(r[1] for r in rss)
        results["logged_errors"] = logged_errors(workdir, "client", "server")
        return results
    finally:
        for process in processes:
            stop(process)


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    server_port, sink_port = free_port(), free_port()
    servers = [subprocess.Popen([sys.executable, __file__, "--serve", str(port)]) for port in (server_port, sink_port)]
    try:
        for port, process in zip((server_port, sink_port), servers, strict=True):
            wait_listening(port, process)
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
            workdir = Path(tmp)
            pki = make_pki(workdir / "pki", "client", "server")
            direct = {str(rate): measure(server_port, "server", rate) for rate in RATES}
            plain = run_mesh(workdir, server_port, sink_port, None)
            mtls = run_mesh(workdir, server_port, sink_port, pki)
    finally:
        for process in servers:
            stop(process)
    report = build_report(direct, {"plain": plain, "mtls": mtls})
    # The machine may be shared: the load average says how much the numbers are worth.
    report["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    print_table(report)
    (RESULTS / "sidecar.json").write_text(json.dumps(report, indent=2))
    return 0


def build_report(direct: dict[str, Any], meshes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for mode, mesh in meshes.items():
        for rate in RATES:
            base, via = direct[str(rate)], mesh[str(rate)]
            rows.append({
                "mode": mode, "rate_rps": rate,
                "direct_p50_ms": base["p50_ms"], "direct_p99_ms": base["p99_ms"],
                "mesh_p50_ms": via["p50_ms"], "mesh_p99_ms": via["p99_ms"],
                "hop_p50_ms": (via["p50_ms"] - base["p50_ms"]) / 2, "hop_p99_ms": (via["p99_ms"] - base["p99_ms"]) / 2,
                "achieved_rps": via["achieved_rps"], "errors": via["errors"],
                "cpu_cores_per_1k_rps": via["cpu_cores_per_1k_rps"],
                "idle_rss_mb": mesh["idle_rss_mb"], "rss_mb": via["rss_mb"], "peak_rss_mb": mesh["peak_rss_mb"],
                "logged_errors": mesh["logged_errors"],
            })
    return {"duration_s": DURATION_S, "targets": TARGETS, "rows": rows,
            "reference": "service meshes: 1-2 ms per hop; Linkerd proxy ~26 MB, Istio ~156 MB (Linkerd 2021)"}


def print_table(report: dict[str, Any]) -> None:
    header = (f"{'mode':<6} {'rps':>5} {'direct p50/p99':>15} {'mesh p50/p99':>14} {'hop p50':>8} {'hop p99':>8} "
              f"{'errors':>6} {'cpu/1k rps':>10} {'idle MB':>7} {'RSS MB':>7} {'peak':>6}")
    load = report.get("load_average")
    if load:
        print(f"{os.cpu_count()} CPUs, load average {load['before']:.1f} before, {load['after']:.1f} after")
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        print(f"{row['mode']:<6} {row['rate_rps']:>5} {row['direct_p50_ms']:>7.2f}/{row['direct_p99_ms']:<7.2f}"
              f" {row['mesh_p50_ms']:>6.2f}/{row['mesh_p99_ms']:<7.2f}"
              f" {row['hop_p50_ms']:>7.2f}  {row['hop_p99_ms']:>7.2f}"
              f" {row['errors']:>6} {row['cpu_cores_per_1k_rps']:>10.2f}"
              f" {row['idle_rss_mb']:>7.1f} {row['rss_mb']:>7.1f} {row['peak_rss_mb']:>6.1f}")
    logged = {row["mode"]: row["logged_errors"] for row in report["rows"]}
    print("errors the sidecars logged: " + ", ".join(f"{mode} {count}" for mode, count in logged.items()))
    targets = report["targets"]
    print(f"targets: hop p50 <= {targets['hop_p50_ms']} ms, hop p99 <= {targets['hop_p99_ms']} ms, "
          f"RSS <= {targets['rss_mb']} MB; {report['reference']}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(main())
