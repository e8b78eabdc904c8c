"""Inbound identity policy: who is calling (the verified mTLS identity) and may they (allow-list).

With mTLS the caller is the SPIFFE ID of the client certificate the handshake verified; a caller
the allow-list does not name gets 403. Without TLS (local development only) the caller is what the
calling sidecar claims in `x-gatewatch-caller`, which is not authenticated. Either way the local
service receives the caller's name in that header.
"""

from __future__ import annotations

from typing import Final

from proxy.mtls import AllowList, peer_identity
from proxy.policy import CallNext, Exchange, Response

CALLER_HEADER: Final = "x-gatewatch-caller"
CALLER_ATTRIBUTE: Final = "gatewatch.caller"


class InboundIdentity:
    """Establishes the caller's identity and enforces the allow-list."""

    name = "identity"

    def __init__(self, allow: AllowList, tls: bool, trust_domain: str) -> None:
        self.allow = allow
        self.tls = tls
        self.trust_domain = trust_domain

    async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
        headers = exchange.request.headers
        if self.tls:
            caller = peer_identity(exchange.state.get("peer_cert"), self.trust_domain)
        else:
            caller = headers.get(CALLER_HEADER)
        if caller:
            exchange.set_attribute(CALLER_ATTRIBUTE, caller)
        if not self.allow.allows(caller):
            who = repr(caller) if caller else "an unidentified caller"
            return Response.json(403, {"error": "caller_not_allowed", "message": f"{who} may not call this service"})
        if caller:
            headers.set(CALLER_HEADER, caller)
        else:
            headers.remove(CALLER_HEADER)  # never pass on an identity nobody vouched for
        return await call_next(exchange)
