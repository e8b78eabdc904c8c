"""The demo shop: routes, JWT login, service-to-service calls and fault injection."""

from __future__ import annotations

import httpx
import jwt
import pytest

from demo.faults import FaultSpec
from demo.services import JWT_AUDIENCE
from demo.shop import ShopHost


@pytest.fixture(scope="module")
def shop():
    host = ShopHost(seed=3)
    host.start()
    yield host
    host.stop()


def test_routes_answer_through_downstream_calls(shop):
    with httpx.Client() as client:
        home = client.get(shop.url("storefront") + "/api/home")
        product = client.get(shop.url("catalog") + "/api/products/7")
        missing = client.get(shop.url("catalog") + "/products/100000")
        order = client.post(shop.url("checkout") + "/checkout", json={"amount": 5})
    assert home.status_code == 200 and len(home.json()["featured"]) == 6
    assert product.json()["stock"] == 7 * 13 % 40  # came from inventory
    assert missing.status_code == 404
    assert order.json()["status"] == "paid"


def test_login_issues_a_jwt_the_jwks_verifies(shop):
    user, password = next(iter(shop.users.items()))
    with httpx.Client() as client:
        ok = client.post(shop.url("auth") + "/api/login", json={"username": user, "password": password})
        bad = client.post(shop.url("auth") + "/api/login", json={"username": user, "password": "nope"})
        junk = client.post(shop.url("auth") + "/api/login", content=b"\xff not json")
    assert ok.status_code == 200
    [key] = jwt.PyJWKSet.from_dict(shop.signer.jwks()).keys
    claims = jwt.decode(ok.json()["token"], key.key, algorithms=["ES256"], audience=JWT_AUDIENCE)
    assert claims["sub"] == user
    assert bad.status_code == 401 and junk.status_code == 401


def test_fault_window_fails_requests_and_checkout_reports_it(shop):
    shop.inject("payment", FaultSpec(error_rate=1.0), 30)
    try:
        with httpx.Client() as client:
            assert client.post(shop.url("payment") + "/charge").status_code == 503
            assert client.post(shop.url("checkout") + "/checkout", json={}).status_code == 502
    finally:
        shop.faults["payment"].clear()
    with httpx.Client() as client:
        assert client.post(shop.url("payment") + "/charge").status_code == 200


def test_fault_endpoint_validates_its_input(shop):
    with httpx.Client() as client:
        bad = client.post(shop.url("inventory") + "/_demo/fault", json={"error_rate": 3})
        ok = client.post(shop.url("inventory") + "/_demo/fault", json={"latency_s": 0.01, "duration_s": 0.5})
    assert bad.status_code == 400
    assert ok.json() == {"service": "inventory", "error_rate": 0.0, "latency_s": 0.01}


def test_malformed_http_gets_400_not_a_hang(shop):
    import socket

    with socket.create_connection(("127.0.0.1", shop.ports["catalog"]), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


def test_topology_configs_validate_against_the_proxy_models(tmp_path):
    from demo.services import SERVICES
    from demo.topology import callees, gateway_config, sidecar_config, start_order

    order = start_order()
    assert sorted(order) == sorted(SERVICES)
    for service in SERVICES:  # callees start first, so their inbound ports are known
        assert all(order.index(c) < order.index(service) for c in callees(service))
    ports = {s: 20000 + i for i, s in enumerate(SERVICES)}
    gateway_models = pytest.importorskip("proxy.gatewayconfig")
    config = gateway_models.GatewayConfig.model_validate(gateway_config(ports, tmp_path / "jwks.json"))
    assert gateway_models.check_references(config) == []
    assert {r.name for r in config.routes if r.auth} == {"checkout", "orders"}
    sidecar_models = pytest.importorskip("proxy.sidecar_config")
    checkout = sidecar_models.SidecarConfig.model_validate(sidecar_config("checkout", 1234, ports))
    assert sorted(checkout.services) == ["inventory", "payment"]
