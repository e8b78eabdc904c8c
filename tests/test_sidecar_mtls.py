"""mTLS between sidecars: verified identities, allow-lists, and rejection of unauthenticated peers."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from gatewatch.settings import Settings
from tests.test_sidecar_support import make_pki, running_backend, running_sidecar

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"), "checkout", "payment", "intruder")


def call(port: int, service: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/pay", headers={"host": service}, timeout=10)


def https_client(pki: Path, cert: tuple[Path, Path] | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(*cert)
    return httpx.Client(verify=context, timeout=10)


def test_mtls_call_carries_verified_identity_and_allow_list_rejects_unlisted(settings: Settings, pki: Path) -> None:
    with (
        running_backend() as payment,
        running_sidecar("payment", payment.port, settings, pki=pki, inbound={"allow": ["checkout"]}) as callee,
        running_sidecar("checkout", 1, settings, {"payment": [callee.inbound_port]}, pki=pki) as checkout,
        running_sidecar("intruder", 1, settings, {"payment": [callee.inbound_port]}, pki=pki) as intruder,
    ):
        ok = call(checkout.outbound_port, "payment")
        assert ok.status_code == 200
        assert payment.seen[-1]["x-gatewatch-caller"] == "checkout"
        assert payment.seen[-1]["x-forwarded-proto"] == "https"
        denied = call(intruder.outbound_port, "payment")
        assert denied.status_code == 403 and denied.json()["error"] == "caller_not_allowed"
        assert payment.hits == 1


def test_caller_cannot_spoof_identity_header(settings: Settings, pki: Path) -> None:
    with (
        running_backend() as payment,
        running_sidecar("payment", payment.port, settings, pki=pki) as callee,
        https_client(pki, (pki / "intruder.pem", pki / "intruder.key")) as client,
    ):
        response = client.get(f"https://127.0.0.1:{callee.inbound_port}/", headers={"x-gatewatch-caller": "checkout"})
        assert response.status_code == 200
        assert payment.seen[-1]["x-gatewatch-caller"] == "intruder"  # the certificate wins


def test_client_without_certificate_is_rejected(settings: Settings, pki: Path) -> None:
    with (
        running_backend() as payment,
        running_sidecar("payment", payment.port, settings, pki=pki) as callee,
        https_client(pki, None) as client,
    ):
        with pytest.raises(httpx.TransportError):
            client.get(f"https://127.0.0.1:{callee.inbound_port}/")
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS listener
            httpx.get(f"http://127.0.0.1:{callee.inbound_port}/", timeout=5)
        assert payment.hits == 0


def test_certificate_from_another_ca_is_rejected(settings: Settings, pki: Path, tmp_path: Path) -> None:
    make_pki(tmp_path, "checkout")  # a foreign CA
    with (
        running_backend() as payment,
        running_sidecar("payment", payment.port, settings, pki=pki) as callee,
        running_sidecar("checkout", 1, settings, {"payment": [callee.inbound_port]}, pki=tmp_path) as rogue,
    ):
        assert call(rogue.outbound_port, "payment").status_code == 502
        assert payment.hits == 0


def test_callee_must_prove_it_is_the_named_service(settings: Settings, pki: Path) -> None:
    with (
        running_backend() as impostor_backend,
        running_sidecar("intruder", impostor_backend.port, settings, pki=pki) as impostor,
        running_sidecar("checkout", 1, settings, {"payment": [impostor.inbound_port]}, pki=pki,
                        config={"retry": {"max_retries": 0}}) as checkout,
    ):
        response = call(checkout.outbound_port, "payment")
        assert response.status_code == 502
        assert impostor_backend.hits == 0


class _Unreadable:
    """An SSLObject stand-in whose handshake is done but whose session cannot be serialized."""

    def version(self) -> str:
        return "TLSv1.3"

    @property
    def session(self) -> None:
        raise ValueError("i2d() failed")


def test_new_connections_resume_the_tls_session_and_keep_verified_identities(pki: Path) -> None:
    import asyncio

    import uvloop

    from proxy import mtls

    def files(service: str) -> mtls.TlsFiles:
        return mtls.TlsFiles(pki / "ca.pem", pki / f"{service}.pem", pki / f"{service}.key")

    client = mtls.client_context(files("checkout"))
    seen: list[tuple[bool, str | None]] = []  # the server's view: resumed?, caller identity

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            ssl_object = transport.get_extra_info("ssl_object")
            seen.append((ssl_object.session_reused, mtls.identity_of(ssl_object)))
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    async def dial(port: int) -> tuple[bool, str | None]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="payment")
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"  # the session ticket has arrived by now
        ssl_object = writer.get_extra_info("ssl_object")
        writer.close()
        return ssl_object.session_reused, mtls.identity_of(ssl_object)

    async def main() -> list[tuple[bool, str | None]]:
        server = await asyncio.get_running_loop().create_server(
            Echo, "127.0.0.1", 0, ssl=mtls.server_context(files("payment")))
        port = server.sockets[0].getsockname()[1]
        try:
            one_by_one = [await dial(port) for _ in range(3)]
            # A burst: connections are created while others are still handshaking.
            burst = await asyncio.gather(*(dial(port) for _ in range(20)))
            assert {identity for _, identity in burst} == {"payment"}
            # A connection whose session cannot be read (OpenSSL: "i2d() failed" mid-handshake)
            # must not fail the next connection: it just does a full handshake.
            client._recent["payment"].append(_Unreadable())  # type: ignore[attr-defined]
            client._sessions.clear()  # type: ignore[attr-defined]
            assert await dial(port) == (False, "payment")
            return one_by_one
        finally:
            server.close()

    assert uvloop.run(main()) == [(False, "payment"), (True, "payment"), (True, "payment")]
    assert seen[:3] == [(False, "checkout"), (True, "checkout"), (True, "checkout")]
    assert len(seen) == 24 and {identity for _, identity in seen} == {"checkout"}
    # A session is only offered to the server name it was made with.
    assert isinstance(client, mtls.ResumingClientContext)
    assert client._resumable("inventory") is None
