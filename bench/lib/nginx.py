"""Debian nginx with one worker as a benchmark peer: a config from server blocks, started in the
foreground under a temporary prefix."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench.lib import procs

_CONF = """
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
{http}
}}
"""


def static_server(port: int, body: str = "ok\\n") -> str:
    """A server block answering every request with 200 and `body` (an nginx string literal)."""
    return f'  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "{body}"; }} }}'


def otlp_sink_server(prefix: Path, port: int) -> str:
    """An OTLP/HTTP sink: POST /v1/traces answered 200 with an empty body (a valid
    ExportTraceServiceResponse), one access-log line per batch (`sink_batches`); 404 elsewhere."""
    return f"""  log_format otlp '$status';
  server {{
    listen 127.0.0.1:{port}; default_type application/x-protobuf; client_max_body_size 0;
    access_log {prefix}/otlp.log otlp;
    location /v1/traces {{ return 200; }}
    location / {{ return 404; }}
  }}"""


def sink_batches(prefix: Path) -> dict[str, int]:
    """OTLP export requests the sink of `otlp_sink_server(prefix, ...)` answered, by status."""
    log = prefix / "otlp.log"
    counts: dict[str, int] = {}
    for status in log.read_text().split() if log.exists() else []:
        counts[status] = counts.get(status, 0) + 1
    return counts


def upstream_conf(prefix: Path, app_port: int, sink_port: int) -> Path:
    """nginx.conf for the benchmarks' upstream: a server answering 'ok' and the OTLP sink."""
    return write_conf(prefix, f"{static_server(app_port)}\n{otlp_sink_server(prefix, sink_port)}")


def write_conf(prefix: Path, http: str) -> Path:
    """nginx.conf in `prefix`: one worker, no access log, keep-alive without limit, `http` inside http {}."""
    conf = prefix / "nginx.conf"
    conf.write_text(_CONF.format(prefix=prefix, http=http))
    return conf


def start(prefix: Path, conf: Path, ports: list[int]) -> subprocess.Popen[bytes]:
    """Run nginx in the foreground and wait until it accepts on every port in `ports`."""
    process = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        for port in ports:
            procs.wait_port(port, process)
    except RuntimeError:
        procs.stop([process])
        raise
    return process


def worker_pids(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> list[int]:
    """The pids of nginx's worker processes (children of the master `process`), once it forked them."""
    deadline = time.monotonic() + timeout_s
    while not (workers := procs.child_pids(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the master listens before it forks: a worker can still be on its way
    return workers


def error_count(prefix: Path) -> int:
    """Lines at level [error] or worse in nginx's error log (0 in a clean run)."""
    log = prefix / "error.log"
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if any(f"[{level}]" in line for level in ("error", "crit", "alert", "emerg")))
