"""OAuth 2.0 token introspection (RFC 7662) against a real local authorization server: active tokens
become identities, inactive ones 401, answers are cached (known on the fast path without I/O), and
an unreachable server is a 503, never an admitted request."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from proxy.auth import AuthFailure, IntrospectionAuthenticator
from proxy.gatewayconfig import IntrospectionProviderConfig
from proxy.policy import Headers, Request

TOKENS = {"good-token": {"active": True, "sub": "user-7", "scope": "read write", "exp": 4102444800},
          "revoked-token": {"active": False}}


class AuthorizationServer(ThreadingHTTPServer):
    """POST /introspect answers from TOKENS and records each token it was asked about."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Introspect)
        self.asked: list[str] = []


class _Introspect(BaseHTTPRequestHandler):
    server: AuthorizationServer

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
        token = form["token"][0]
        self.server.asked.append(token)
        body = json.dumps(TOKENS.get(token, {"active": False})).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[AuthorizationServer]:
    server = AuthorizationServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _request(token: str) -> Request:
    return Request("GET", "/", "", Headers([("authorization", f"Bearer {token}")]))


def _authenticator(url: str) -> IntrospectionAuthenticator:
    return IntrospectionAuthenticator(IntrospectionProviderConfig(type="introspection", url=url, timeout_s=2))


def test_active_tokens_are_identities_cached_and_inactive_ones_refused(server: AuthorizationServer) -> None:
    authenticator = _authenticator(f"http://127.0.0.1:{server.server_address[1]}/introspect")

    async def scenario() -> None:
        assert authenticator.cached(_request("good-token")) is None  # not asked yet: the slow path
        identity = await authenticator.authenticate(_request("good-token"))
        assert (identity.subject, identity.scopes, identity.method) == ("user-7", {"read", "write"}, "introspection")
        assert authenticator.cached(_request("good-token")) == identity  # now known without I/O
        assert await authenticator.authenticate(_request("good-token")) == identity
        with pytest.raises(AuthFailure) as inactive:
            await authenticator.authenticate(_request("revoked-token"))
        assert (inactive.value.outcome, inactive.value.status) == ("inactive", 401)
        with pytest.raises(AuthFailure):  # the refusal is cached too, briefly
            authenticator.cached(_request("revoked-token"))
        await authenticator.close()

    asyncio.run(scenario())
    assert server.asked == ["good-token", "revoked-token"]  # one introspection call per token


def test_an_unreachable_authorization_server_is_503() -> None:
    authenticator = _authenticator("http://127.0.0.1:9/introspect")  # discard port: refused

    async def scenario() -> None:
        with pytest.raises(AuthFailure) as unavailable:
            await authenticator.authenticate(_request("good-token"))
        assert (unavailable.value.outcome, unavailable.value.status) == ("introspection_unavailable", 503)
        await authenticator.close()

    asyncio.run(scenario())
