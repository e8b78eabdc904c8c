"""Authentication for the gateway: JWT bearer (JWKS file or URL, algorithm pinned per key), OAuth 2.0
token introspection (RFC 7662) for opaque tokens, and API keys. Each answers `Identity` or raises
`AuthFailure` carrying the 401/403 answer (with WWW-Authenticate, RFC 6750)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx
import jwt

from proxy.gatewayconfig import ApiKeyProviderConfig, IntrospectionProviderConfig, JwtProviderConfig
from proxy.policy import Request, Response

log = logging.getLogger(__name__)
_wall_clock: Final = time.time
_CACHE_MAX: Final = 50_000  # verified tokens kept in memory; the cache is cleared when it fills


@dataclass(frozen=True)
class Identity:
    """Who the request is from, after authentication."""

    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    method: str = "jwt"  # jwt | introspection | api_key
    expires_at: float = float("inf")  # time.time() after which a cached identity is stale


class AuthFailure(Exception):
    """Authentication or authorization failed; `outcome` goes on the span, `response()` to the client."""

    def __init__(self, outcome: str, description: str, status: int = 401, scheme: str = "Bearer",
                 scope: str = "") -> None:
        super().__init__(description)
        self.outcome = outcome
        self.status = status
        self.scheme = scheme
        self.scope = scope

    def response(self) -> Response:
        """401 with a WWW-Authenticate challenge, or 403 for a missing scope."""
        challenge = f'{self.scheme} realm="gatewatch"'
        if self.outcome != "missing":
            error = "insufficient_scope" if self.status == 403 else "invalid_token"
            challenge += f', error="{error}", error_description="{self}"'
        if self.scope:
            challenge += f', scope="{self.scope}"'
        return Response.json(
            self.status, {"error": self.outcome, "message": str(self)}, [("www-authenticate", challenge)],
        )


class Authenticator(Protocol):
    """One auth provider."""

    async def authenticate(self, request: Request) -> Identity:
        """The caller's identity, or AuthFailure."""
        ...

    def cached(self, request: Request) -> Identity | None:
        """The caller's identity when it is known without I/O (a verified token still cached, an
        API key), else None (then `authenticate`); AuthFailure when it is known to fail."""
        ...

    async def start(self) -> None:
        """Load keys / open clients before serving."""

    async def close(self) -> None:
        """Release clients."""


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer` field, or AuthFailure("missing")."""
    value = request.headers.get("authorization")
    if not value:
        raise AuthFailure("missing", "bearer token required")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthFailure("malformed", "authorization must be a bearer token")
    return token.strip()


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (space separated, RFC 8693/9068) or `scp` (list)."""
    scope = claims.get("scope", claims.get("scp", ""))
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(str(item) for item in scope)
    return frozenset()


class _TokenCache:
    """Identities per token until they expire (bounded: cleared when full)."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Identity | AuthFailure]] = {}

    def get(self, token: str) -> Identity | AuthFailure | None:
        entry = self._items.get(token)
        if entry is None:
            return None
        if entry[0] <= _wall_clock():
            del self._items[token]
            return None
        return entry[1]

    def put(self, token: str, until: float, value: Identity | AuthFailure) -> None:
        if len(self._items) >= _CACHE_MAX:
            self._items.clear()
        self._items[token] = (until, value)

    def clear(self) -> None:
        self._items.clear()


class JwtAuthenticator:
    """JWT bearer tokens checked against a JWKS; each key accepts only its own algorithm."""

    _MISS_REFRESH_S = 10.0  # an unknown `kid` refetches the JWKS at most this often (rotation)

    def __init__(self, config: JwtProviderConfig) -> None:
        self.config = config
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at = 0.0
        self._last_miss_refresh = 0.0
        self._cache = _TokenCache()
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self.refresh()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def refresh(self) -> None:
        """(Re)load the key set; a failed load keeps the previous keys."""
        async with self._lock:
            try:
                document = await self._fetch()
                keys = {}
                for entry in document.get("keys", []):
                    key = jwt.PyJWK(entry)  # algorithm: the JWK's `alg`, else inferred from kty/crv
                    keys[entry.get("kid")] = key
            except (OSError, ValueError, httpx.HTTPError, jwt.PyJWKError, jwt.InvalidKeyError) as exc:
                log.warning("cannot load JWKS (%s); keeping %d keys", str(exc)[:200], len(self._keys))
                return
            if set(keys) != set(self._keys):
                self._cache.clear()  # a removed key must stop authenticating cached tokens
            self._keys = keys
            self._loaded_at = time.monotonic()

    async def _fetch(self) -> dict[str, Any]:
        if self.config.jwks_file is not None:
            data: Any = json.loads(self.config.jwks_file.read_bytes())
        else:
            assert self.config.jwks_url is not None
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=5.0)
            response = await self._client.get(self.config.jwks_url)
            response.raise_for_status()
            data = response.json()
        if not isinstance(data, dict):
            raise ValueError("JWKS must be a JSON object with a keys list")
        return data

    def cached(self, request: Request) -> Identity | None:
        cached = self._cache.get(bearer_token(request))
        return cached if isinstance(cached, Identity) else None

    async def authenticate(self, request: Request) -> Identity:
        cached = self.cached(request)
        if cached is not None:
            return cached
        token = bearer_token(request)
        if time.monotonic() - self._loaded_at > self.config.jwks_cache_s:
            await self.refresh()
        identity = await self._verify(token)
        self._cache.put(token, identity.expires_at, identity)
        return identity

    async def _verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthFailure("malformed", "token is not a JWT") from None
        kid = header.get("kid")
        key = self._key_for(kid)
        if key is None and time.monotonic() - self._last_miss_refresh > self._MISS_REFRESH_S:
            self._last_miss_refresh = time.monotonic()
            await self.refresh()
            key = self._key_for(kid)
        if key is None:
            raise AuthFailure("unknown_key", "token signed by an unknown key")
        if header.get("alg") != key.algorithm_name:
            raise AuthFailure("bad_algorithm", "token algorithm not allowed for its key")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[key.algorithm_name], audience=self.config.audience,
                issuer=self.config.issuer, leeway=self.config.leeway_s,
                options={"require": ["exp"], "verify_aud": self.config.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthFailure("expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthFailure("not_yet_valid", "token not valid yet (nbf)") from None
        except jwt.InvalidIssuerError:
            raise AuthFailure("bad_issuer", "token issuer not accepted") from None
        except jwt.InvalidAudienceError:
            raise AuthFailure("bad_audience", "token audience not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthFailure("bad_signature", "token signature invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthFailure("malformed", f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidTokenError:
            raise AuthFailure("malformed", "token invalid") from None
        subject = str(claims.get("sub", ""))
        return Identity(subject, scopes_of(claims), "jwt", float(claims["exp"]) + self.config.leeway_s)

    def _key_for(self, kid: str | None) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        return key


class IntrospectionAuthenticator:
    """Opaque bearer tokens checked with the authorization server (RFC 7662), cached briefly."""

    def __init__(self, config: IntrospectionProviderConfig) -> None:
        self.config = config
        self._cache = _TokenCache()
        self._client: httpx.AsyncClient | None = None
        secret = os.environ.get(config.client_secret_env, "") if config.client_secret_env else ""
        self._auth = httpx.BasicAuth(config.client_id, secret) if config.client_id else None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.config.timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def cached(self, request: Request) -> Identity | None:
        cached = self._cache.get(self._cache_key(bearer_token(request)))
        if isinstance(cached, AuthFailure):
            raise cached
        return cached

    @staticmethod
    def _cache_key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()  # never keep raw tokens as keys

    async def authenticate(self, request: Request) -> Identity:
        cached = self.cached(request)
        if cached is not None:
            return cached
        token = bearer_token(request)
        key = self._cache_key(token)
        result = await self._introspect(token)
        now = time.time()
        if not result.get("active"):
            failure = AuthFailure("inactive", "token is not active")
            self._cache.put(key, now + min(self.config.cache_s, 5.0), failure)
            raise failure
        expires = float(result.get("exp", now + self.config.cache_s))
        identity = Identity(str(result.get("sub") or result.get("username") or ""), scopes_of(result),
                            "introspection", expires)
        self._cache.put(key, min(now + self.config.cache_s, expires), identity)
        return identity

    async def _introspect(self, token: str) -> dict[str, Any]:
        if self._client is None:
            await self.start()
        assert self._client is not None
        try:
            response = await self._client.post(
                self.config.url, data={"token": token, "token_type_hint": "access_token"},
                auth=self._auth or httpx.USE_CLIENT_DEFAULT,
            )
            response.raise_for_status()
            result = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("token introspection failed: %s", type(exc).__name__)
            raise AuthFailure("introspection_unavailable", "cannot verify the token now", status=503) from None
        if not isinstance(result, dict):
            raise AuthFailure("introspection_unavailable", "bad introspection answer", status=503)
        return result


class ApiKeyAuthenticator:
    """API keys in a header, stored only as SHA-256 digests; the key id is the subject."""

    def __init__(self, config: ApiKeyProviderConfig) -> None:
        self.header = config.header.lower()
        self._ids = {digest: name for name, digest in config.keys.items()}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def authenticate(self, request: Request) -> Identity:
        return self.cached(request)

    def cached(self, request: Request) -> Identity:
        value = request.headers.get(self.header)
        if not value:
            raise AuthFailure("missing", f"{self.header} header required", scheme="ApiKey")
        name = self._ids.get(hashlib.sha256(value.encode("latin-1")).hexdigest())
        if name is None:
            raise AuthFailure("bad_api_key", "unknown API key", scheme="ApiKey")
        return Identity(name, frozenset(), "api_key")


def build_authenticator(
    config: JwtProviderConfig | IntrospectionProviderConfig | ApiKeyProviderConfig,
) -> Authenticator:
    """The authenticator for one provider config."""
    if isinstance(config, JwtProviderConfig):
        return JwtAuthenticator(config)
    if isinstance(config, IntrospectionProviderConfig):
        return IntrospectionAuthenticator(config)
    return ApiKeyAuthenticator(config)
