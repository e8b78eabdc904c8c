"""Request-smuggling probes against the proxy's HTTP/1.1 listener.

Each probe hides a second request (`/smuggled`) behind an ambiguous framing of the first. The
listener must reject the ambiguity (400/501) or frame it one consistent way: the handler never
sees `/smuggled` as a request of its own.
"""

from __future__ import annotations

import pytest

from tests.faults.httpprobe import echo_server, exchange_raw, statuses

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
LENGTH = str(len(SMUGGLED)).encode()  # a Content-Length that covers exactly the hidden request

PROBES: dict[str, bytes] = {
    "cl_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "te_cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "duplicate_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n" + SMUGGLED,
    "cl_list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0, %d\r\n\r\n" + SMUGGLED,
    "cl_plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +%d\r\n\r\n" + SMUGGLED,
    "cl_space_before_colon": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : %d\r\n\r\n" + SMUGGLED,
    "te_obfuscated": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te_identity_chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te_obs_fold": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "te_tab": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "te_twice": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "chunk_size_overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000000000000000000000\r\nx\r\n0\r\n\r\n" + SMUGGLED,
    "chunk_ext_lf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nxx\r\n0\r\n\r\n" + SMUGGLED,
    "bare_lf_headers": b"POST / HTTP/1.1\nHost: x\nContent-Length: %d\n\n" + SMUGGLED,
    "http10_te": b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "get_with_cl_body": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" + SMUGGLED,
    "nul_in_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: %d\r\n\r\n" + SMUGGLED,
}
PROBES = {name: raw.replace(b"%d", LENGTH) for name, raw in PROBES.items()}


@pytest.fixture(scope="module")
def echo():
    with echo_server() as server:
        yield server


@pytest.mark.parametrize("name", sorted(PROBES))
def test_smuggled_request_never_reaches_handler(echo, name: str):
    port, seen = echo
    before = len(seen.paths())
    reply = exchange_raw(port, PROBES[name])
    after = seen.paths()[before:]
    assert "/smuggled" not in after, f"{name}: handler saw {after}; reply {reply.data[:200]!r}"
    codes = statuses(reply)
    # A rejected framing ends in an error status or a closed connection, never in a hang.
    assert codes or reply.closed, f"{name}: no response and the connection stayed open"
    assert len(codes) <= 1 or codes[-1] >= 400, f"{name}: answered as {len(codes)} requests: {codes}"
    assert not codes or codes[0] >= 400 or name == "get_with_cl_body", f"{name}: accepted as {codes}"


def test_pipelined_requests_still_served_in_order(echo):
    port, seen = echo
    raw = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5))
    reply = exchange_raw(port, raw)
    assert statuses(reply) == [200] * 5
    assert [p for p in seen.paths() if p.startswith("/p")][-5:] == [f"/p{i}" for i in range(5)]


def test_oversized_headers_rejected_with_431(echo):
    port, _ = echo
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert statuses(exchange_raw(port, raw)) == [431]
