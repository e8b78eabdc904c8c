"""Sidecar YAML: validation, explicit TLS choice, per-service overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.cli import main
from gatewatch.errors import ConfigError
from proxy.sidecar_config import load_sidecar_config, parse_sidecar_config

GOOD = """
service: checkout
inbound: {port: 0, forward_to: "127.0.0.1:8000", allow: [gateway]}
outbound: {port: 0}
tls: {enabled: true, ca: pki/ca.pem, cert: pki/checkout.pem, key: pki/checkout.key}
services:
  payment:
    endpoints: ["127.0.0.1:15016", "127.0.0.1:15017"]
    breaker: {consecutive_failures: 3}
    retry: {max_retries: 1, methods: [get, post]}
breaker: {window_s: 5}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    return path


def test_good_config_resolves_paths_and_merges_overrides(tmp_path: Path) -> None:
    config = load_sidecar_config(write(tmp_path, GOOD))
    assert config.service == "checkout"
    assert config.tls.files().ca == (tmp_path / "pki" / "ca.pem").resolve()
    assert config.inbound.allow == ["gateway"]
    payment = config.breaker_for("payment")
    assert payment.consecutive_failures == 3 and payment.window_s == 5
    retry = config.retry_for("payment")
    assert retry.max_retries == 1 and retry.may_retry_method("POST")


def test_service_flag_overrides_file(tmp_path: Path) -> None:
    assert load_sidecar_config(write(tmp_path, GOOD), service="orders").service == "orders"


BASE = {"service": "checkout", "inbound": {"forward_to": "127.0.0.1:8000"}}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "tls"),  # TLS must be chosen explicitly
        ({"tls": {"enabled": True}}, "certs init"),
        ({"tls": {"enabled": False}, "inbound": {"forward_to": "nowhere"}}, "host:port"),
        ({"tls": {"enabled": False}, "services": {"Pay Ment": {"endpoints": ["a:1"]}}}, "service name"),
        ({"tls": {"enabled": False}, "services": {"payment": {"endpoints": []}}}, "services.payment.endpoints"),
        ({"tls": {"enabled": False}, "services": {"payment": {"endpoints": ["a:1"], "breaker": {"x": 1}}}},
         "services.payment.breaker: Value error, x:"),
        ({"tls": {"enabled": False}, "retry": {"max_retries": -1}}, "retry.max_retries"),
        ({"tls": {"enabled": False}, "unknown": 1}, "unknown"),
    ],
)
def test_bad_configs_name_the_field(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_sidecar_config({**BASE, **extra})


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_sidecar_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"sidecar\.yaml:2: invalid YAML"):
        load_sidecar_config(write(tmp_path, "service: checkout\ninbound: [unclosed"))
    with pytest.raises(ConfigError, match="valid dictionary"):
        load_sidecar_config(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("breaker: {window_s: 5}", "breaker: {window_s: -5}", r"sidecar\.yaml:11: breaker\.window_s"),
        ("{consecutive_failures: 3}", "{consecutive_failures: 0}",
         r"sidecar\.yaml:9: services\.payment\.breaker: .*consecutive_failures"),
        ('["127.0.0.1:15016", "127.0.0.1:15017"]', "[]", r"sidecar\.yaml:8: services\.payment\.endpoints"),
        ("forward_to: \"127.0.0.1:8000\"", "forward_to: nowhere", r"sidecar\.yaml:3: inbound\.forward_to"),
    ],
)
def test_file_errors_name_the_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_sidecar_config(write(tmp_path, GOOD.replace(old, new)))


def test_cli_reports_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "service: checkout\ninbound: {forward_to: '127.0.0.1:1'}\n")
    assert main(["sidecar", "--service", "checkout", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gatewatch: error:") and "tls" in err and err.count("\n") == 1
