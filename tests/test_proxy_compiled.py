"""The proxies' compiled request path (proxy/compiled.py): loaded only when built from the current
sources, off with GATEWATCH_COMPILED=0, and the plain-Python modules still serve."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import proxy.server
from proxy import compiled

ROOT = Path(__file__).resolve().parent.parent


def test_the_suite_runs_the_compiled_request_path_when_it_is_built() -> None:
    if os.environ.get(compiled.DISABLE_ENV) == "0" or compiled.built_from() is None:
        pytest.skip("no compiled build (make install builds it)")
    assert compiled.is_compiled(proxy.server), "a current build exists but the plain module was loaded"
    assert all(compiled.is_compiled(sys.modules[f"proxy.{name}"])
               for name in compiled.COMPILED_MODULES if f"proxy.{name}" in sys.modules)


def test_only_a_build_of_the_current_sources_goes_on_the_package_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(compiled, "BUILD_DIR", str(tmp_path))
    monkeypatch.delenv(compiled.DISABLE_ENV, raising=False)
    plain = ["/src/proxy"]
    assert compiled.package_path(plain) == plain  # never built

    (tmp_path / "stamp").write_text("0" * 64 + "\n")  # built from other sources
    with caplog.at_level(logging.WARNING, logger="proxy.compiled"):
        assert compiled.package_path(plain) == plain
    assert "built from other sources" in caplog.text

    (tmp_path / "stamp").write_text(compiled.source_digest() + "\n")
    assert compiled.package_path(plain) == [str(tmp_path / "proxy"), *plain]
    monkeypatch.setenv(compiled.DISABLE_ENV, "0")
    assert compiled.package_path(plain) == plain


def test_the_digest_covers_every_compiled_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in compiled.COMPILED_MODULES:
        (tmp_path / f"{name}.py").write_bytes((Path(compiled.PACKAGE_DIR) / f"{name}.py").read_bytes())
    monkeypatch.setattr(compiled, "PACKAGE_DIR", str(tmp_path))
    before = compiled.source_digest()
    (tmp_path / "headers.py").write_text((tmp_path / "headers.py").read_text() + "\n# edited\n")
    assert compiled.source_digest() != before


def test_plain_python_serves_a_request_with_the_switch_off() -> None:
    script = textwrap.dedent("""
        import asyncio
        import proxy.server
        from proxy import compiled
        from proxy.policy import Response

        assert not compiled.is_compiled(proxy.server)

        async def echo_path(exchange):
            return Response.json(200, {"path": exchange.request.path})

        async def main():
            server = proxy.server.HttpServer(echo_path)
            await server.start()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET http://example/pay?x=1 HTTP/1.1\\r\\nHost: example\\r\\nConnection: close\\r\\n\\r\\n")
            print((await asyncio.wait_for(reader.read(), 10)).decode())
            await server.stop(1)

        asyncio.run(main())
    """)
    env = {**os.environ, compiled.DISABLE_ENV: "0"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200 OK") and result.stdout.rstrip().endswith('{"path":"/pay"}')
