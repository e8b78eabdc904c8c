"""The command line: foundation subcommands and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gatewatch import devkafka
from gatewatch.cli import build_parser
from gatewatch.errors import GatewatchError


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatewatch", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_db_migrate_then_status(tmp_path: Path):
    first = run_cli("db", "migrate", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "applied 0001_core" in first.stdout
    second = run_cli("db", "migrate", "--data-dir", str(tmp_path))
    assert "schema up to date" in second.stdout
    status = run_cli("db", "status", "--data-dir", str(tmp_path))
    assert "0001_core: applied" in status.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["db", "migrate", "--clickhouse", "mysql://nope"], "GATEWATCH_CLICKHOUSE"),
        (["db", "migrate", "--clickhouse", "http://127.0.0.1:1/db"], "cannot open the ClickHouse store"),
        (["status", "--kafka", "127.0.0.1:1", "--data-dir", "{tmp}"], "Kafka at 127.0.0.1:1 unreachable"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], needle: str):
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode != 0
    assert needle in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn on PATH
    with pytest.raises(GatewatchError, match="java is not installed"):
        devkafka.start(tmp_path / "k")


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil

    java = shutil.which("java")
    assert java
    (tmp_path / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GatewatchError, match="mvn is not installed"):
        devkafka.resolve_jars(tmp_path / "k")


def test_cluster_ids_never_look_like_an_option(monkeypatch: pytest.MonkeyPatch):
    # 0xf8 as the first byte encodes to a leading '-' in urlsafe base64; the storage tool
    # then read the id as a flag and format failed (one CI run in 64).
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(devkafka.uuid, "uuid4", lambda: next(drawn))
    cluster_id = devkafka.new_cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22


def test_every_subcommand_has_a_handler():
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        assert isinstance(action.choices, dict)  # a subparsers action's: command name -> its parser
        for name, sub in action.choices.items():
            assert sub.format_help(), name
