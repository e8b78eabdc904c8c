"""Safe defaults: listeners on loopback unless configured, secrets never printed or logged."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys

import pytest

from gatewatch.settings import Settings
from gatewatch.store import redact
from tests.faults.sockets import exposed, listening_addresses

SECRET = "s3cr3t-Pa55-do-not-log"


def test_listeners_default_to_loopback(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GATEWATCH_HOST", raising=False)
    assert Settings().host == "127.0.0.1"


def test_socket_probe_sees_our_listeners():
    with socket.socket() as inside, socket.socket() as outside:
        inside.bind(("127.0.0.1", 0))
        inside.listen()
        outside.bind(("0.0.0.0", 0))
        outside.listen()
        found = listening_addresses()
        assert ("127.0.0.1", inside.getsockname()[1]) in found
        assert exposed(found) == [("0.0.0.0", outside.getsockname()[1])]


def test_control_token_not_in_repr_or_dump():
    settings = Settings(control_token=SECRET)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text
    assert settings.control_token.get_secret_value() == SECRET


def test_dsn_password_redacted():
    assert SECRET not in redact(f"http://gw:{SECRET}@127.0.0.1:8123/gatewatch")


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_cli_errors_and_debug_logs_hide_store_password(verbose: list[str]):
    dsn = f"http://gw:{SECRET}@127.0.0.1:1/gatewatch"
    out = subprocess.run(
        [sys.executable, "-m", "gatewatch", "db", "migrate", "--clickhouse", dsn, *verbose],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "cannot open the ClickHouse store" in out.stderr
    assert SECRET not in out.stdout + out.stderr


def test_secret_in_env_not_logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GATEWATCH_CONTROL_TOKEN", SECRET)
    with caplog.at_level(logging.DEBUG):
        settings = Settings()
        logging.getLogger("gatewatch.test").info("settings: %s", settings)
    assert SECRET not in caplog.text
