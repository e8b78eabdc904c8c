"""Header rules of a proxy (RFC 9110 §7.6.1): hop-by-hop fields stay on their hop, forwarding
fields (X-Forwarded-For/-Proto/-Host) say who the client was."""

from __future__ import annotations

from proxy.policy import Exchange, Headers

# Fields that describe one connection, never forwarded (plus any named in `Connection`).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authenticate", "proxy-authorization",
})


def _connection_tokens(headers: list[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def strip_hop_by_hop(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A copy without hop-by-hop fields and without those the Connection field names."""
    listed = _connection_tokens(headers)
    if listed:
        return [item for item in headers if item[0] not in HOP_BY_HOP and item[0] not in listed]
    return [item for item in headers if item[0] not in HOP_BY_HOP]


def upstream_request_headers(exchange: Exchange, add_forwarded: bool = True) -> Headers:
    """The request's fields as sent upstream: end-to-end ones plus X-Forwarded-* when asked."""
    request = exchange.request
    items = strip_hop_by_hop(request.headers.items())
    if add_forwarded:
        forwarded_for = None
        kept: list[tuple[str, str]] = []
        for item in items:
            name = item[0]
            if name == "x-forwarded-for":
                forwarded_for = f"{forwarded_for}, {item[1]}" if forwarded_for else item[1]
            elif name not in ("x-forwarded-proto", "x-forwarded-host"):
                kept.append(item)
        client = exchange.client_address
        kept.append(("x-forwarded-for", f"{forwarded_for}, {client}" if forwarded_for else client))
        kept.append(("x-forwarded-proto", exchange.scheme))
        if request.host:
            kept.append(("x-forwarded-host", request.host))
        items = kept
    if request.content_length is not None:
        # Replace the received field: forwarding it and appending ours sent two (strict servers reject that).
        items = [item for item in items if item[0] != "content-length"]
        items.append(("content-length", str(request.content_length)))
    return Headers.trusted(items)


def response_headers_from_upstream(raw: list[tuple[str, str]]) -> tuple[Headers, int | None]:
    """End-to-end response fields and the upstream's Content-Length (None when absent/chunked)."""
    length: int | None = None
    kept = []
    for item in strip_hop_by_hop(raw):
        if item[0] == "content-length":
            length = int(item[1]) if item[1].isdigit() else None
        else:
            kept.append(item)
    return Headers.trusted(kept), length
