"""Header rules of a proxy (RFC 9110 §7.6.1): hop-by-hop fields stay on their hop, forwarding
fields (X-Forwarded-For/-Proto/-Host) say who the client was."""

from __future__ import annotations

import sys
from typing import Final

from proxy.memo import Memo
from proxy.policy import Exchange, Headers

# Fields that describe one connection, never forwarded (plus any named in `Connection`).
HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authenticate", "proxy-authorization",
})


_FORWARDING: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
_NOTHING: Final[frozenset[str]] = frozenset()
_LENGTH: Final = frozenset({"content-length"})
_FORWARDING_AND_LENGTH: Final = _FORWARDING | _LENGTH


# The usual `Connection` values name only fields that are hop-by-hop anyway: nothing more to drop.
_PLAIN_CONNECTION: Final = frozenset({"keep-alive", "close", "Keep-Alive", "Close"})


def _host_name(host: str) -> str:
    bare = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return bare.strip().lower()


# What the parsers' bytes decode to: a request's or response's field names, its method and its
# host are nearly always ones seen before. Interned, so that comparing them with the names in the
# code (`Headers.get("content-length")`, the hop-by-hop set) takes the identity shortcut.
FIELD_NAMES: Final = Memo(lambda raw: sys.intern(raw.decode("latin-1").lower()), 1024)
"""A received field name (bytes) as `Headers` keeps it: latin-1, lower-case."""
METHODS: Final = Memo(lambda raw: sys.intern(raw.decode("latin-1")), 256)
"""The parser's method (bytes) as a string."""
HOST_NAMES: Final = Memo(_host_name, 1024)
"""The name in a Host value: without its port, lower-case (`[::1]:8080` -> `[::1]`)."""


def _connection_tokens(value: str) -> frozenset[str]:
    """The field names `Connection` lists beyond the hop-by-hop ones (dropped in any case)."""
    if value in _PLAIN_CONNECTION:
        return _NOTHING
    return frozenset({token.strip().lower() for token in value.split(",") if token.strip()}) - HOP_BY_HOP


def _end_to_end(
    headers: list[tuple[str, str]], skip: frozenset[str],
) -> tuple[list[tuple[str, str]], frozenset[str], str | None]:
    """The fields that are neither hop-by-hop, nor named by `Connection`, nor in `skip`; the names
    `Connection` listed (usually none, so one pass); and the last skipped Content-Length value."""
    kept: list[tuple[str, str]] = []
    listed = _NOTHING
    length: str | None = None
    for item in headers:
        name = item[0]
        if name in HOP_BY_HOP:
            if name == "connection" and (tokens := _connection_tokens(item[1])):
                listed = listed | tokens
        elif name not in skip:
            kept.append(item)
        elif name == "content-length":
            length = item[1]
    if listed:
        kept = [item for item in kept if item[0] not in listed]
    return kept, listed, length


def strip_hop_by_hop(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A copy without hop-by-hop fields and without those the Connection field names."""
    return _end_to_end(headers, _NOTHING)[0]


def upstream_request_headers(exchange: Exchange, add_forwarded: bool = True) -> Headers:
    """The request's fields as sent upstream: end-to-end ones plus X-Forwarded-* when asked."""
    request = exchange.request
    with_length = request.content_length is not None
    # Replace the received Content-Length: forwarding it and appending ours sent two (strict
    # servers reject that); the X-Forwarded-* fields are rebuilt below.
    skip = (_FORWARDING_AND_LENGTH if with_length else _FORWARDING) if add_forwarded else (
        _LENGTH if with_length else _NOTHING)
    items, listed, _ = _end_to_end(request.headers.items(), skip)
    if add_forwarded:
        client = exchange.client_address
        prior = [] if "x-forwarded-for" in listed else request.headers.get_all("x-forwarded-for")
        items.append(("x-forwarded-for", ", ".join([*prior, client]) if prior else client))
        items.append(("x-forwarded-proto", exchange.scheme))
        if request.host:
            items.append(("x-forwarded-host", request.host))
    if with_length:
        items.append(("content-length", str(request.content_length)))
    return Headers.trusted(items)


def response_headers_from_upstream(raw: list[tuple[str, str]]) -> tuple[Headers, int | None]:
    """End-to-end response fields and the upstream's Content-Length (None when absent/chunked)."""
    kept, listed, value = _end_to_end(raw, _LENGTH)
    length = int(value) if value is not None and value.isdigit() and "content-length" not in listed else None
    return Headers.trusted(kept), length


def message_head(start_line: str, items: list[tuple[str, str]], tail: str = "\r\n") -> bytes:
    """A message head in latin-1: `start_line` (with its CRLF), the fields as `name: value` lines,
    then `tail` (more lines, ending with the empty line). One string, encoded once."""
    parts = [start_line]
    for name, value in items:
        # no string per field: one join copies each piece once; appends, not `+= (...)`: no tuple
        parts.append(name)
        parts.append(": ")
        parts.append(value)
        parts.append("\r\n")
    parts.append(tail)
    return "".join(parts).encode("latin-1")
