"""Gateway benchmark with wrk, in one run: (a) the upstream direct, (b) Debian nginx (one worker) as
reverse proxy, (c) the gatewatch gateway with JWT auth, rate limiting and 100% tracing exported to
the collector. Max throughput (closed loop), then latency at half of the gateway's max rate (paced
with wrk's Lua `delay`). Prints a table and writes bench/results/gateway.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DURATION_S = int(os.environ.get("GATEWAY_BENCH_SECONDS", "6"))
CONNECTIONS = 32
PACED_CONNECTIONS = 8
SECRET = b"bench-secret-of-thirty-two-bytes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def nginx_conf(prefix: Path, upstream_port: int, proxy_port: int) -> Path:
    """One nginx (one worker): a static upstream answering 'ok' and a keep-alive reverse proxy to it."""
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{upstream_port}; location / {{ return 200 "ok\\n"; }} }}
  server {{
    listen 127.0.0.1:{proxy_port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}
  }}
}}
""")
    return conf


def gateway_conf(prefix: Path, upstream_port: int, port: int, admin_port: int) -> Path:
    jwks = prefix / "jwks.json"
    key = jwt.utils.base64url_encode(SECRET).decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "bench", "alg": "HS256", "k": key}]}))
    conf = prefix / "gateway.yaml"
    conf.write_text(f"""
listen_port: {port}
admin_port: {admin_port}
tracing: {{enabled: true, sample_ratio: 1.0, service_name: bench-gateway}}
upstreams:
  app: {{endpoints: ["127.0.0.1:{upstream_port}"]}}
auth:
  users: {{type: jwt, jwks_file: {jwks}, issuer: bench, audience: gatewatch}}
rate_limits:
  generous: {{rate_per_s: 1000000, burst: 1000000, key: subject}}
routes:
  - name: api
    match: {{prefix: /}}
    upstream: app
    auth: {{provider: users, scopes: [read]}}
    rate_limit: generous
""")
    return conf


def wrk(url: str, connections: int, headers: list[str], script: Path | None = None) -> dict[str, float]:
    """Run wrk; requests/s and latency percentiles in ms."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{DURATION_S}s", "--latency", url]
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=DURATION_S + 30).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for percentile in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{percentile}_ms"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return result


def paced_script(prefix: Path, rate: float, connections: int) -> Path:
    """wrk Lua: each connection waits connections/rate between requests (open-ish loop at `rate`)."""
    script = prefix / f"paced_{int(rate)}.lua"
    script.write_text(f"function delay() return {max(1, int(1000 * connections / rate))} end\n")
    return script


def cpu_s(pids: list[int]) -> float:
    """utime + stime of processes (all their threads), in seconds, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def measured(url: str, headers: list[str], pids: list[int]) -> dict[str, float]:
    """Closed-loop max rate, plus the CPU the serving processes spent per request (us)."""
    before = cpu_s(pids)
    result = wrk(url, CONNECTIONS, headers)
    requests = result["rps"] * DURATION_S
    result["cpu_us_per_request"] = (cpu_s(pids) - before) / requests * 1e6 if requests else 0.0
    return result


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} missing: run `make debian-deps` (apt-get install wrk nginx)", file=sys.stderr)
            return 1
    prefix = Path(tempfile.mkdtemp(prefix="gatewatch-bench-gw-"))
    upstream_port, nginx_port, gw_port, admin_port, otlp_port = (free_port() for _ in range(5))
    env = {**os.environ, "GATEWATCH_DATA_DIR": str(prefix / "data"), "GATEWATCH_OTLP_ENDPOINT":
           f"http://127.0.0.1:{otlp_port}"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        nginx = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(nginx_conf(prefix, upstream_port, nginx_port))],
                                 stderr=subprocess.DEVNULL)
        processes.append(nginx)
        collector = subprocess.Popen(
            [str(ROOT / ".venv/bin/gatewatch"), "collector", "--http-port", str(otlp_port), "--grpc-port", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(collector)
        gateway = subprocess.Popen(
            [str(ROOT / ".venv/bin/gatewatch"), "gateway", "--config",
             str(gateway_conf(prefix, upstream_port, gw_port, admin_port))],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        processes.append(gateway)
        for port in (upstream_port, nginx_port, otlp_port, gw_port):
            wait_port(port)
        token = jwt.encode({"sub": "bench-user", "iss": "bench", "aud": "gatewatch", "scope": "read",
                            "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256", headers={"kid": "bench"})
        auth = [f"Authorization: Bearer {token}"]
        targets = {
            "direct": (f"http://127.0.0.1:{upstream_port}/", []),
            "nginx": (f"http://127.0.0.1:{nginx_port}/", []),
            "gatewatch": (f"http://127.0.0.1:{gw_port}/", auth),
        }
        load_before = os.getloadavg()
        wrk(targets["gatewatch"][0], 4, auth)  # warm-up: connections, JIT-free but caches filled
        workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(nginx.pid)], capture_output=True,
                                                      text=True).stdout.split()]
        # CPU per request: nginx's worker serves the upstream too, so its proxy share is nginx - direct;
        # the gateway's is its own process (event loop + span export thread).
        serving = {"direct": workers, "nginx": workers, "gatewatch": [gateway.pid]}
        peak = {name: measured(url, headers, serving[name]) for name, (url, headers) in targets.items()}
        peak["nginx"]["cpu_us_per_request"] -= peak["direct"]["cpu_us_per_request"]
        rate = peak["gatewatch"]["rps"] / 2
        script = paced_script(prefix, rate, PACED_CONNECTIONS)
        paced = {name: wrk(url, PACED_CONNECTIONS, headers, script) for name, (url, headers) in targets.items()}
        gateway_rss = rss_mb(gateway.pid)
        nginx_rss = rss_mb(nginx.pid) + sum(rss_mb(pid) for pid in workers)
        load_after = os.getloadavg()
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(prefix, ignore_errors=True)
    added_p50 = paced["gatewatch"]["p50_ms"] - paced["direct"]["p50_ms"]
    added_p99 = paced["gatewatch"]["p99_ms"] - paced["direct"]["p99_ms"]
    ratio = peak["gatewatch"]["rps"] / peak["nginx"]["rps"]
    print(f"\ngateway benchmark: wrk -t1, {DURATION_S}s per run, {os.cpu_count()} CPUs (shared); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'target':<11}{'max rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>11}   |"
          f"{'paced rps':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name in targets:
        a, b = peak[name], paced[name]
        print(f"{name:<11}{a['rps']:>10.0f}{a.get('p50_ms', 0):>9.2f}{a.get('p99_ms', 0):>9.2f}"
              f"{a['cpu_us_per_request']:>11.1f}   |"
              f"{b['rps']:>10.0f}{b.get('p50_ms', 0):>9.2f}{b.get('p99_ms', 0):>9.2f}")
    print("CPU us/req: direct = nginx serving 'ok'; nginx = its proxy share (worker minus direct); "
          "gatewatch = the gateway process")
    print(f"paced at {rate:.0f} rps (half of the gateway's max) with {PACED_CONNECTIONS} connections")
    print(f"gateway/nginx throughput: {ratio:.0%} (target >= 50%)")
    print(f"added latency over direct at half max rate: p50 {added_p50:+.2f} ms (target <= 0.5), "
          f"p99 {added_p99:+.2f} ms (target <= 2)")
    print(f"RSS: gateway {gateway_rss:.0f} MiB, nginx (master+worker, also serving the upstream) {nginx_rss:.0f} MiB")
    errors = (peak["gatewatch"]["non_2xx"], paced["gatewatch"]["non_2xx"])
    print(f"non-2xx from the gateway: {errors[0]:.0f} peak, {errors[1]:.0f} paced")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps({
        "duration_s": DURATION_S, "connections": CONNECTIONS, "paced_connections": PACED_CONNECTIONS,
        "peak": peak, "paced_rate_rps": rate, "paced": paced, "throughput_vs_nginx": ratio,
        "added_latency_ms": {"p50": added_p50, "p99": added_p99},
        "rss_mb": {"gateway": gateway_rss, "nginx": nginx_rss},
        "load_average": {"before": load_before[0], "after": load_after[0]},
        "cpu_us_per_request": {name: peak[name]["cpu_us_per_request"] for name in targets},
        "targets": {"throughput_vs_nginx": 0.5, "added_p50_ms": 0.5, "added_p99_ms": 2.0},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
