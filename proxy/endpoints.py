"""Upstream endpoints from `host:port` strings, with optional (m)TLS to a named server."""

from __future__ import annotations

import ssl

from proxy.upstream import Endpoint


def endpoint_of(address: str, server_name: str = "", context: ssl.SSLContext | None = None) -> Endpoint:
    """The engine endpoint for `host:port` (IPv6 in brackets); with TLS the peer must prove it is
    `server_name` (a DNS SAN of its certificate: the service name for `gatewatch certs` ones)."""
    host, _, port = address.rpartition(":")
    return Endpoint(host.strip("[]"), int(port), ssl=context, server_hostname=server_name if context else None)
