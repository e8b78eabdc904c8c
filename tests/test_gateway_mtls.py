"""Gateway -> sidecar over mTLS: the gateway's upstream `tls` block (CA, its own certificate, the
identity the upstream must present) lets it call a sidecar's mTLS inbound port."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatewatch.errors import ConfigError
from gatewatch.settings import Settings
from proxy.gateway import GatewayService
from proxy.gatewayconfig import load_gateway_config
from tests.test_sidecar_support import make_pki, running_backend, running_sidecar

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"), "gateway", "storefront", "intruder")


def write_config(directory: Path, port: int, tls: str) -> Path:
    """A gateway config routing everything to the sidecar at `port`; `tls` is the upstream's tls line."""
    path = directory / "gateway.yaml"
    path.write_text(
        "listen_port: 0\nadmin_port: 0\ntracing: {enabled: false}\n"
        f"upstreams:\n  storefront:\n    endpoints: ['127.0.0.1:{port}']\n{tls}"
        "routes:\n  - {name: all, match: {prefix: /}, upstream: storefront}\n"
    )
    return path


@contextmanager
def running_gateway(config: Path, settings: Settings) -> Iterator[GatewayService]:
    service = GatewayService(config, settings)
    service.start()
    try:
        yield service
    finally:
        service.stop(2)


def call(gateway: GatewayService) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{gateway.port}/items", timeout=10)


@pytest.fixture
def workdir(tmp_path: Path, pki: Path) -> Path:
    """The gateway's directory with its certificates under certs/ (the config names them relatively)."""
    shutil.copytree(pki, tmp_path / "certs")
    return tmp_path


TLS = "    tls: {ca: certs/ca.pem, cert: certs/%s.pem, key: certs/%s.key%s}\n"


def tls_line(identity: str = "gateway", server_name: str = "") -> str:
    return TLS % (identity, identity, f", server_name: {server_name}" if server_name else "")


@contextmanager
def storefront(settings: Settings, pki: Path, **extra: Any) -> Iterator[tuple[Any, int]]:
    """The storefront service behind its sidecar (mTLS inbound, only the gateway allowed)."""
    with (
        running_backend() as backend,
        running_sidecar("storefront", backend.port, settings, pki=pki, inbound={"allow": ["gateway"]}) as sidecar,
    ):
        yield backend, sidecar.inbound_port


def test_gateway_calls_sidecar_over_mtls_as_its_own_identity(settings: Settings, pki: Path, workdir: Path) -> None:
    with storefront(settings, pki) as (backend, port), running_gateway(write_config(workdir, port, tls_line()),
                                                                       settings) as gateway:
        response = call(gateway)
        assert response.status_code == 200 and response.text == "hello from backend"
        assert backend.seen[-1]["x-gatewatch-caller"] == "gateway"  # verified from the gateway's certificate


def test_gateway_without_client_certificate_is_refused(settings: Settings, pki: Path, workdir: Path) -> None:
    with storefront(settings, pki) as (backend, port), running_gateway(write_config(workdir, port, ""),
                                                                       settings) as gateway:
        assert call(gateway).status_code == 502  # plain HTTP to the mTLS listener: no handshake, no request
        assert backend.hits == 0


def test_gateway_refuses_upstream_with_another_identity(settings: Settings, pki: Path, workdir: Path) -> None:
    with storefront(settings, pki) as (backend, port):
        config = write_config(workdir, port, tls_line(server_name="payment"))  # storefront is not payment
        with running_gateway(config, settings) as gateway:
            assert call(gateway).status_code == 502
        config = write_config(workdir, port, tls_line(identity="intruder"))  # not on the allow-list
        with running_gateway(config, settings) as gateway:
            assert call(gateway).status_code == 403
        assert backend.hits == 0


def test_tls_paths_are_relative_to_the_config_and_bad_files_are_config_errors(pki: Path, workdir: Path,
                                                                              settings: Settings) -> None:
    config = load_gateway_config(write_config(workdir, 1, tls_line()))
    tls = config.upstreams["storefront"].tls
    assert tls is not None and tls.ca == workdir / "certs" / "ca.pem" and tls.server_name is None
    with pytest.raises(ConfigError, match=re.escape("gateway.yaml:7: upstreams.storefront.tls.key")):
        load_gateway_config(write_config(workdir, 1, "    tls: {ca: certs/ca.pem, cert: certs/gateway.pem}\n"))
    with pytest.raises(ConfigError, match="cannot load TLS files"):
        GatewayService(write_config(workdir, 1, TLS % ("missing", "missing", "")), settings).start()
