"""`gatewatch certs init|issue` and the mTLS helpers: identities, key modes, handshakes, allow-lists."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from gatewatch.cli import main
from gatewatch.errors import ConfigError
from proxy import certs, mtls
from tests.test_sidecar_support import make_pki


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("certs"), "checkout", "payment", "intruder")


def files(directory: Path, service: str) -> mtls.TlsFiles:
    return mtls.TlsFiles(directory / "ca.pem", directory / f"{service}.pem", directory / f"{service}.key")


def test_cli_init_and_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(directory), "--trust-domain", "example.test"]) == 0
    assert main(["certs", "issue", "orders", "--dir", str(directory)]) == 0
    for key in ("ca.key", "orders.key"):
        assert stat.S_IMODE((directory / key).stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((directory / "orders.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.test/orders"]
    out = capsys.readouterr().out
    assert "orders.pem" in out and "BEGIN" not in out  # paths only, never key material


def test_cli_refuses_to_overwrite_ca_and_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(directory)]) == 0
    assert main(["certs", "init", "--dir", str(directory)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["certs", "issue", "Bad Name!", "--dir", str(directory)]) == 2
    assert main(["certs", "issue", "orders", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "certs init" in capsys.readouterr().err


def test_issued_cert_verifies_against_ca(ca_dir: Path) -> None:
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((ca_dir / "payment.pem").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert certs.trust_domain_of(ca) == "gatewatch.local"


def test_issue_rejects_bad_service_name(ca_dir: Path) -> None:
    with pytest.raises(ConfigError):
        certs.issue(ca_dir, "../etc/passwd")


def test_peer_identity_parsing() -> None:
    cert = {"subjectAltName": (("DNS", "localhost"), ("URI", "spiffe://gatewatch.local/payment"))}
    assert mtls.peer_identity(cert) == "payment"
    assert mtls.peer_identity(cert, trust_domain="other.test") is None
    assert mtls.peer_identity({"subjectAltName": (("URI", "spiffe://gatewatch.local/a/b"),)}) is None
    assert mtls.peer_identity(None) is None
    assert mtls.peer_identity({}) is None


def test_allow_list() -> None:
    assert mtls.AllowList(None).allows("anyone")
    allow = mtls.AllowList(["checkout"])
    assert allow.allows("checkout")
    assert not allow.allows("intruder")
    assert not allow.allows(None)


def test_missing_tls_files_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        mtls.server_context(files(tmp_path, "nobody"))


def _serve_once(context: ssl.SSLContext) -> tuple[int, threading.Thread, list[object]]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[object] = []

    def run() -> None:
        with listener:
            listener.settimeout(10)
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    seen.append(mtls.identity_of(tls))
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                seen.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread, seen


def test_mutual_handshake_carries_both_identities(ca_dir: Path) -> None:
    port, thread, seen = _serve_once(mtls.server_context(files(ca_dir, "payment")))
    client = mtls.client_context(files(ca_dir, "checkout"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname="payment") as tls,
    ):
        mtls.expect_identity(tls, "payment")
        with pytest.raises(ssl.SSLError):
            mtls.expect_identity(tls, "inventory")
        assert tls.recv(2) == b"ok"
    thread.join(10)
    assert seen == ["checkout"]


def _assert_rejected(port: int, client: ssl.SSLContext, thread: threading.Thread, seen: list[object]) -> None:
    # TLS 1.3 reports the rejection on the first read, so the whole exchange is in the block.
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw) as tls,
    ):
        tls.recv(2)
    thread.join(10)
    assert isinstance(seen[0], ssl.SSLError)


def test_server_rejects_client_without_certificate(ca_dir: Path) -> None:
    port, thread, seen = _serve_once(mtls.server_context(files(ca_dir, "payment")))
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(ca_dir / "ca.pem")
    anonymous.check_hostname = False
    _assert_rejected(port, anonymous, thread, seen)


def test_server_rejects_certificate_from_another_ca(ca_dir: Path, tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    certs.issue(tmp_path, "checkout")  # same name, foreign CA
    port, thread, seen = _serve_once(mtls.server_context(files(ca_dir, "payment")))
    rogue = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    rogue.load_cert_chain(tmp_path / "checkout.pem", tmp_path / "checkout.key")
    rogue.check_hostname = False
    rogue.verify_mode = ssl.CERT_NONE
    _assert_rejected(port, rogue, thread, seen)


def test_client_rejects_server_with_another_identity(ca_dir: Path) -> None:
    port, thread, _ = _serve_once(mtls.server_context(files(ca_dir, "intruder")))
    client = mtls.client_context(files(ca_dir, "checkout"))
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname="payment"),
    ):
        pass
    thread.join(10)
