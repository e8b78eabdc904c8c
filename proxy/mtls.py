"""Mutual TLS between sidecars: SSL contexts that require and verify peer certificates, the peer's
service identity from its SPIFFE URI SAN, and the allow-list of callers.

Callers dial endpoints by address but verify the server name as the *service* name
(`server_hostname=<service>`, a DNS SAN in every service certificate), so a sidecar only talks to
the service it meant to call; `expect_identity` checks the SPIFFE ID as well where wanted.
"""

from __future__ import annotations

import ssl
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewatch.errors import ConfigError
from proxy.spiffe import DEFAULT_TRUST_DOMAIN

PeerCert = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files one sidecar needs: the CA bundle it trusts and its own certificate and key."""

    ca: Path
    cert: Path
    key: Path


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context that demands a client certificate signed by the CA (TLS 1.2+)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(context, files)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class ResumingClientContext(ssl.SSLContext):
    """A client context that resumes a recent TLS session with the same server name: a new
    connection to a callee then skips the certificate signatures and checks (~40% of a full
    handshake's CPU on both sides). The peer identities stay those the full handshake verified:
    the server restores the client certificate from its session ticket. Resumption is only an
    optimisation: whatever goes wrong with it, the connection does a full handshake."""

    def __init__(self, protocol: int) -> None:  # SSLContext.__new__ takes the protocol
        self._recent: dict[str | bytes | None, deque[ssl.SSLObject]] = {}
        self._sessions: dict[str | bytes | None, ssl.SSLSession] = {}

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        """asyncio's and uvloop's TLS transports call this per connection."""
        if session is None and not server_side:
            try:
                session = self._resumable(server_hostname)
            except Exception:  # never let the optimisation fail a connection
                session = None
        ssl_object = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if not server_side:
            self._recent.setdefault(server_hostname, deque(maxlen=4)).append(ssl_object)
        return ssl_object

    def _resumable(self, server_hostname: str | bytes | None) -> ssl.SSLSession | None:
        """The newest session with a ticket for this server name, unexpired; connections whose
        handshake is still running (or that have no ticket yet) are looked at again next time."""
        recent = self._recent.get(server_hostname)
        for ssl_object in reversed(recent or ()):
            if ssl_object.version() is None:  # handshake not done: no session to take
                continue
            session = ssl_object.session  # TLS 1.3: a ticket arrives after the handshake
            if session is not None and session.has_ticket:
                self._sessions[server_hostname] = session
                recent.clear()  # type: ignore[union-attr]  # non-empty here
                break
        cached = self._sessions.get(server_hostname)
        if cached is not None and cached.time + cached.timeout <= time.time():
            del self._sessions[server_hostname]
            return None
        return cached


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context that presents our certificate and verifies the server's chain and name
    (connect with server_hostname=<callee service>); it resumes sessions (`ResumingClientContext`)."""
    context = ResumingClientContext(ssl.PROTOCOL_TLS_CLIENT)
    _load(context, files)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load(context: ssl.SSLContext, files: TlsFiles) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
        context.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files ({files.cert}, {files.key}, CA {files.ca}): {exc}") from None


def peer_identity(peer_cert: PeerCert | None, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str | None:
    """The service named by a verified peer certificate (`getpeercert()` form), or None."""
    if not peer_cert:
        return None
    prefix = f"spiffe://{trust_domain}/"
    for kind, value in peer_cert.get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.startswith(prefix):
            service = value[len(prefix):]
            return service if service and "/" not in service else None
    return None


def identity_of(transport_ssl: ssl.SSLObject | ssl.SSLSocket | None,
                trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str | None:
    """The peer service of a TLS connection (None on plain connections or without a SPIFFE ID)."""
    if transport_ssl is None:
        return None
    return peer_identity(transport_ssl.getpeercert(), trust_domain)


def expect_identity(transport_ssl: ssl.SSLObject | ssl.SSLSocket | None, service: str,
                    trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
    """Raise ssl.SSLError unless the server we dialled presented `service`'s identity."""
    found = identity_of(transport_ssl, trust_domain)
    if found != service:
        raise ssl.SSLError(f"upstream presented identity {found!r}, expected {service!r}")


class AllowList:
    """Which callers may reach this service; `None` allows every authenticated caller."""

    def __init__(self, callers: Iterable[str] | None) -> None:
        self.callers = None if callers is None else frozenset(callers)

    def allows(self, caller: str | None) -> bool:
        """True if `caller` (the verified peer identity) may call; unknown callers never may
        when a list is configured."""
        if self.callers is None:
            return True
        return caller is not None and caller in self.callers
