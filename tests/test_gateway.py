"""Gateway mode with real HTTP clients in front of real local upstream servers."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gatewatch.decisions import Decision, DecisionKind, Mode, Reason, Scope, Target
from gatewatch.errors import ConfigError
from gatewatch.settings import Settings
from proxy.gateway import GatewayService
from proxy.gatewayconfig import load_gateway_config

HS_SECRET = b"test-secret-of-thirty-two-bytes!"
API_KEY = "k-123456"


class EchoHandler(BaseHTTPRequestHandler):
    """Answers with what it received, as JSON; a few paths misbehave on purpose."""

    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _handle(self) -> None:
        body = self._read_body() if self.command in ("POST", "PUT") else b""
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(50):
                chunk = (f"part-{i};" * 100).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        payload = {
            "server": self.server.server_address[1],  # type: ignore[index]
            "method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": len(body), "body_sha": hashlib.sha256(body).hexdigest(),
        }
        self._reply(200, json.dumps(payload).encode())

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstreams() -> Iterator[list[int]]:
    """Two real HTTP/1.1 upstream servers on 127.0.0.1; yields their ports."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler) for _ in range(2)]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [server.server_address[1] for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


class Keys:
    """Signing keys for each algorithm and the JWKS that publishes their public halves."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.private: dict[str, bytes | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey]
        self.private = {"hs": HS_SECRET, "rs": self.rsa, "es": self.ec, "ed": self.ed}
        self.algorithm = {"hs": "HS256", "rs": "RS256", "es": "ES256", "ed": "EdDSA"}

    def jwks(self) -> dict[str, Any]:
        entries = [
            {"kty": "oct", "kid": "hs", "alg": "HS256", "k": jwt.utils.base64url_encode(HS_SECRET).decode()},
            {**json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key())), "kid": "rs", "alg": "RS256"},
            {**json.loads(ECAlgorithm.to_jwk(self.ec.public_key())), "kid": "es"},
            {**json.loads(OKPAlgorithm.to_jwk(self.ed.public_key())), "kid": "ed"},
        ]
        return {"keys": entries}

    def token(self, kid: str = "rs", alg: str | None = None, key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": "alice", "iss": "https://issuer.test", "aud": "gatewatch", "exp": now + 300,
                "scope": "read write", **claims}
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key or self.private[kid], algorithm=alg or self.algorithm[kid], headers={"kid": kid})


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def gateway_yaml(ports: list[int], jwks: Path, decisions: Path, extra_routes: str = "") -> str:
    endpoints = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    key_digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return f"""\
listen_port: 0
admin_port: 0
decisions_file: {decisions}
limits:
  max_header_bytes: 4096
  header_timeout_s: 0.6
  idle_timeout_s: 0.8
  body_timeout_s: 0.6
  drain_timeout_s: 2
tracing:
  enabled: false
upstreams:
  api:
    endpoints: [{endpoints}]
    max_failures: 1
    eject_s: 30
  dead:
    endpoints: ["127.0.0.1:1"]
auth:
  users:
    type: jwt
    jwks_file: {jwks}
    issuer: https://issuer.test
    audience: gatewatch
    leeway_s: 0
  machines:
    type: api_key
    keys: {{robot: "{key_digest}"}}
rate_limits:
  tight: {{rate_per_s: 0.5, burst: 3, key: client}}
routes:
{extra_routes}  - name: secure
    match: {{prefix: /secure/}}
    upstream: api
    auth: {{provider: users, scopes: [read]}}
  - name: admin-only
    match: {{prefix: /admin/}}
    upstream: api
    auth: {{provider: users, scopes: [admin]}}
  - name: robots
    match: {{prefix: /robots/}}
    upstream: api
    auth: {{provider: machines}}
  - name: limited
    match: {{prefix: /limited/}}
    upstream: api
    rate_limit: tight
  - name: users
    match: {{pattern: "/users/{{id}}/orders", methods: [GET]}}
    upstream: api
  - name: vhost
    match: {{prefix: /, host: other.test}}
    upstream: api
  - name: small
    match: {{prefix: /upload/}}
    upstream: api
    max_body_bytes: 1000
  - name: slow
    match: {{prefix: /slow}}
    upstream: api
    timeout_s: 0.5
  - name: dead
    match: {{prefix: /dead/}}
    upstream: dead
  - name: limited-dead
    match: {{prefix: /limited-dead/}}
    upstream: dead
    rate_limit: tight
  - name: open
    match: {{prefix: /}}
    upstream: api
"""


class Gateway:
    """A running GatewayService plus the paths of its config and decisions files."""

    def __init__(self, service: GatewayService, config: Path, decisions: Path, upstreams: list[int]) -> None:
        self.service = service
        self.config = config
        self.decisions = decisions
        self.upstreams = upstreams

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.service.admin_port}"

    def write_decisions(self, decisions: list[Decision]) -> None:
        data = json.dumps([json.loads(d.to_json()) for d in decisions])
        tmp = self.decisions.with_suffix(".tmp")
        tmp.write_text(data)
        tmp.replace(self.decisions)


@pytest.fixture
def gateway(tmp_path: Path, settings: Settings, upstreams: list[int], keys: Keys) -> Iterator[Gateway]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    decisions = tmp_path / "decisions.json"
    decisions.write_text("[]")
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway_yaml(upstreams, jwks, decisions))
    service = GatewayService(config, settings)
    service.start()
    try:
        yield Gateway(service, config, decisions, upstreams)
    finally:
        service.stop(5)


def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# routing and forwarding


def test_routes_by_prefix_pattern_method_and_host(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        echoed = client.get("/users/42/orders?x=1").json()
        assert echoed["path"] == "/users/42/orders?x=1"
        assert client.post("/users/42/orders").json()["path"] == "/users/42/orders"  # falls to the open route
        assert client.get("/users/42").status_code == 200
        vhost = client.get("/anything", headers={"host": "other.test"})
        assert vhost.status_code == 200
        assert vhost.json()["headers"]["x-forwarded-host"] == "other.test"


def test_forwarding_headers_and_hop_by_hop(gateway: Gateway) -> None:
    headers = {"x-forwarded-for": "198.51.100.1", "connection": "keep-alive, x-drop-me", "x-drop-me": "1",
               "x-keep": "yes", "x-gatewatch-subject": "mallory"}
    echoed = httpx.get(gateway.url + "/open", headers=headers).json()["headers"]
    assert echoed["x-forwarded-for"] == "198.51.100.1, 127.0.0.1"
    assert echoed["x-forwarded-proto"] == "http"
    assert echoed["x-keep"] == "yes"
    assert "x-drop-me" not in echoed and "keep-alive" not in echoed
    assert "x-gatewatch-subject" not in echoed  # clients cannot spoof the authenticated subject


def test_round_robin_and_passive_health(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        seen = {client.get("/rr").json()["server"] for _ in range(6)}
    assert seen == set(gateway.upstreams)


def test_keep_alive_reuses_upstream_connections_and_streams(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        for _ in range(20):
            assert client.get("/ka").status_code == 200
        streamed = client.get("/stream")
        assert streamed.status_code == 200
        assert streamed.text == "".join(f"part-{i};" * 100 for i in range(50))
        payload = bytes(range(256)) * 2000
        echoed = client.post("/echo", content=payload).json()
        assert echoed["body_len"] == len(payload)
        assert echoed["body_sha"] == hashlib.sha256(payload).hexdigest()
        chunked = client.post("/echo", content=iter([b"a" * 70000, b"b" * 10])).json()
        assert chunked["body_len"] == 70010
    assert gateway.service._caller.pool.open_connections <= 4


def test_upstream_refused_is_502_and_timeout_is_504(gateway: Gateway) -> None:
    refused = httpx.get(gateway.url + "/dead/x")
    assert refused.status_code == 502
    assert refused.json()["error"] == "upstream_unavailable"
    slow = httpx.get(gateway.url + "/slow")
    assert slow.status_code == 504
    assert slow.json()["error"] == "upstream_timeout"
    assert httpx.get(gateway.url + "/after").status_code == 200


# authentication


@pytest.mark.parametrize("kid", ["hs", "rs", "es", "ed"])
def test_jwt_accepted_for_each_algorithm(gateway: Gateway, keys: Keys, kid: str) -> None:
    response = httpx.get(gateway.url + "/secure/me", headers={"authorization": f"Bearer {keys.token(kid)}"})
    assert response.status_code == 200
    assert response.json()["headers"]["x-gatewatch-subject"] == "alice"


def _failure(gateway: Gateway, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(gateway.url + "/secure/me", headers=headers)


def test_jwt_failures_each_reason(gateway: Gateway, keys: Keys) -> None:
    now = int(time.time())
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "missing": None,
        "malformed": "not-a-jwt",
        "expired": keys.token("hs", exp=now - 60),
        "not_yet_valid": keys.token("hs", nbf=now + 600),
        "bad_issuer": keys.token("hs", iss="https://evil.test"),
        "bad_audience": keys.token("hs", aud="someone-else"),
        "bad_signature": keys.token("rs", key=other_rsa),
        "unknown_key": jwt.encode({"sub": "a", "exp": now + 60}, HS_SECRET, algorithm="HS256",
                                  headers={"kid": "nope"}),
        # an RS256 key must not verify an HS256 token (the algorithm-confusion attack)
        "bad_algorithm": keys.token("rs", alg="HS256", key=b"x" * 32),
    }
    for outcome, token in cases.items():
        response = _failure(gateway, token)
        assert response.status_code == 401, outcome
        assert response.json()["error"] == outcome
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="gatewatch"')
        if outcome != "missing":
            assert 'error="invalid_token"' in challenge


def test_jwt_missing_scope_is_403(gateway: Gateway, keys: Keys) -> None:
    response = httpx.get(gateway.url + "/admin/x", headers={"authorization": f"Bearer {keys.token('es')}"})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    allowed = keys.token("es", scope="read admin")
    assert httpx.get(gateway.url + "/admin/x", headers={"authorization": f"Bearer {allowed}"}).status_code == 200


def test_api_key(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/robots/x").status_code == 401
    assert httpx.get(gateway.url + "/robots/x", headers={"x-api-key": "wrong"}).status_code == 401
    ok = httpx.get(gateway.url + "/robots/x", headers={"x-api-key": API_KEY})
    assert ok.status_code == 200
    assert ok.json()["headers"]["x-gatewatch-subject"] == "robot"


# rate limits and decisions


def test_rate_limit_headers_and_429(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        answers = [client.get("/limited/x") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["ratelimit-limit"] == "3"
    assert [a.headers["ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert int(answers[3].headers["retry-after"]) >= 1
    assert int(answers[3].headers["ratelimit-reset"]) >= 1
    assert answers[3].json()["error"] == "rate_limited"


def test_rate_limit_headers_are_on_error_answers_too(gateway: Gateway) -> None:
    refused = httpx.get(gateway.url + "/limited-dead/x")  # admitted by the limit, then the upstream fails
    assert refused.status_code == 502 and refused.json()["error"] == "upstream_unavailable"
    assert refused.headers["ratelimit-limit"] == "3" and refused.headers["ratelimit-remaining"] == "2"


def _decision(kind: DecisionKind, scope: Scope, key: str, ttl_s: float, mode: Mode = Mode.ENFORCE,
              **params: Any) -> Decision:
    return Decision.new(kind, Target(scope=scope, key=key), Reason(detector="bot", score=0.99),
                        timedelta(seconds=ttl_s), params=params, mode=mode)


def test_rate_limit_decision_applies_and_expires(gateway: Gateway) -> None:
    gateway.write_decisions([_decision(DecisionKind.RATE_LIMIT, Scope.CLIENT, "127.0.0.1", 3.0,
                                       rate_per_s=0.1, burst=2)])
    wait_for(lambda: len(gateway.service.decisions) == 1)
    with httpx.Client(base_url=gateway.url) as client:
        codes = [client.get("/open").status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        wait_for(lambda: client.get("/open").status_code == 200, timeout_s=10)
    metrics = httpx.get(gateway.admin + "/metrics").text
    assert 'gatewatch_gateway_decision_effects_total{effect="limited",kind="rate_limit"}' in metrics


def test_block_route_limit_and_dry_run_decisions(gateway: Gateway) -> None:
    gateway.write_decisions([
        _decision(DecisionKind.BLOCK, Scope.CLIENT, "alice", 30.0),
        _decision(DecisionKind.ROUTE_LIMIT, Scope.ROUTE, "GET /users/{id}/orders", 30.0, rate_per_s=0.1, burst=1),
        _decision(DecisionKind.BLOCK, Scope.CLIENT, "127.0.0.1", 30.0, mode=Mode.DRY_RUN),
    ])
    wait_for(lambda: len(gateway.service.decisions) == 3)
    assert httpx.get(gateway.url + "/open").status_code == 200  # dry run only records
    codes = [httpx.get(gateway.url + "/users/1/orders").status_code for _ in range(2)]
    assert codes == [200, 429]
    gateway.write_decisions([_decision(DecisionKind.BLOCK, Scope.CLIENT, "alice", 30.0)])
    wait_for(lambda: len(gateway.service.decisions) == 1)


def test_block_decision_on_jwt_subject(gateway: Gateway, keys: Keys) -> None:
    gateway.write_decisions([_decision(DecisionKind.BLOCK, Scope.CLIENT, "alice", 30.0)])
    wait_for(lambda: len(gateway.service.decisions) == 1)
    response = httpx.get(gateway.url + "/secure/x", headers={"authorization": f"Bearer {keys.token('hs')}"})
    assert response.status_code == 403
    assert response.json()["error"] == "blocked"


def test_invalid_decisions_file_keeps_last_state(gateway: Gateway) -> None:
    gateway.write_decisions([_decision(DecisionKind.BLOCK, Scope.CLIENT, "127.0.0.1", 30.0)])
    wait_for(lambda: len(gateway.service.decisions) == 1)
    gateway.decisions.write_text("{ not json")
    time.sleep(1.2)
    assert len(gateway.service.decisions) == 1  # fail static
    assert httpx.get(gateway.url + "/open").status_code == 403


# config, reload, admin


def test_hot_reload_applies_valid_and_keeps_old_on_invalid(gateway: Gateway, tmp_path: Path) -> None:
    assert httpx.get(gateway.url + "/open").status_code == 200
    text = gateway.config.read_text()
    new_route = "  - name: teapot\n    match: {path: /open}\n    upstream: dead\n"
    keepalive = "upstream_keepalive: {max_idle_per_endpoint: 8, idle_timeout_s: 5}\n"
    gateway.config.write_text(keepalive + text.replace("routes:\n", "routes:\n" + new_route))
    wait_for(lambda: gateway.service.config_version == 2)
    assert httpx.get(gateway.url + "/open").status_code == 502  # the new route points at the dead upstream
    pool = gateway.service._caller.pool
    assert (pool.max_idle, pool.idle_timeout_s) == (8, 5.0)
    gateway.config.write_text(text.replace("upstream: api", "upstream: nowhere", 1))
    time.sleep(1.5)
    assert gateway.service.config_version == 2
    assert httpx.get(gateway.url + "/open").status_code == 502  # still the last valid config
    gateway.service.reload()  # the SIGHUP path, with the same invalid file
    time.sleep(0.3)
    metrics = httpx.get(gateway.admin + "/metrics").text
    assert 'gatewatch_gateway_config_reloads_total{result="invalid"}' in metrics
    health = httpx.get(gateway.admin + "/healthz").json()
    assert health["status"] == "ok" and health["config_version"] == 2


def test_config_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("upstreams:\n  a:\n    endpoints: [\"nohost\"]\nroutes:\n  - name: r\n    match: {prefix: /}\n"
                    "    upstream: a\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:3: upstreams\.a\.endpoints"):
        load_gateway_config(path)
    path.write_text("upstreams:\n  a:\n    endpoints: [\"h:1\"]\nroutes:\n  - name: r\n    match: {prefix: /}\n"
                    "    upstream: b\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:7: routes\.0\.upstream: unknown upstream 'b'"):
        load_gateway_config(path)
    path.write_text("routes: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: invalid YAML"):
        load_gateway_config(path)
    path.write_text("upstream_keepalive:\n  idle_timeout_s: 0\nupstreams:\n  a:\n    endpoints: [\"h:1\"]\n"
                    "routes:\n  - name: r\n    match: {prefix: /}\n    upstream: a\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: upstream_keepalive\.idle_timeout_s"):
        load_gateway_config(path)


def test_admin_metrics_and_health(gateway: Gateway) -> None:
    httpx.get(gateway.url + "/open")
    metrics = httpx.get(gateway.admin + "/metrics")
    assert metrics.status_code == 200
    assert 'gatewatch_gateway_requests_total{code="200",method="GET",route="open"}' in metrics.text
    assert httpx.get(gateway.admin + "/healthz").json()["status"] == "ok"
