"""Fuzz target for the proxy's HTTP/1.1 listener, driven without sockets (fast enough for
thousands of cases): bytes go straight into the connection protocol through a fake transport.

Invariants: no exception escapes the protocol or the event loop, every byte written back is a
well-formed HTTP/1.1 response, every request task finishes once the client is gone (no hang),
and the handler never runs for more requests than the server answered or rejected plus one.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


class FakeTransport(asyncio.Transport):
    """Collects what the server writes; closing it tells the protocol the connection is gone."""

    def __init__(self, protocol: Any) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass
class HttpOutcome:
    """What one fuzz case produced."""

    written: bytes
    handled: int
    statuses: list[int] = field(default_factory=list)
    loop_errors: list[str] = field(default_factory=list)


class HttpFuzzer:
    """One event loop reused across cases; `run(pieces)` feeds one connection and checks it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.errors.append(str(ctx.get("message"))))

    def close(self) -> None:
        self.loop.close()

    def run(self, pieces: list[bytes]) -> HttpOutcome:
        self.errors.clear()
        outcome = self.loop.run_until_complete(asyncio.wait_for(self._feed(pieces), 10.0))
        outcome.loop_errors = list(self.errors)
        check_http(outcome)
        return outcome

    async def _feed(self, pieces: list[bytes]) -> HttpOutcome:
        from proxy.bodies import limit_body
        from proxy.policy import Exchange, Response
        from proxy.server import HttpServer, HttpServerProtocol, ServerLimits

        handled = 0

        async def handler(exchange: Exchange) -> Response:
            nonlocal handled
            handled += 1
            size = sum([len(chunk) async for chunk in limit_body(exchange.request.body, 4096)])
            return Response.json(200, {"size": size})

        server = HttpServer(handler, limits=ServerLimits(max_header_bytes=2048))
        protocol = HttpServerProtocol(server)
        transport = FakeTransport(protocol)
        protocol.connection_made(transport)
        for piece in pieces:
            if transport.closed:
                break
            protocol.data_received(piece)
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        transport.close()
        await asyncio.sleep(0)
        if server.tasks:
            await asyncio.wait(list(server.tasks), timeout=5.0)
        assert not server.tasks, "request tasks still running after the client left"
        return HttpOutcome(bytes(transport.written), handled)


def check_http(outcome: HttpOutcome) -> None:
    """The invariants of one case (AssertionError names the broken one)."""
    assert not outcome.loop_errors, f"event loop errors: {outcome.loop_errors}"
    data = outcome.written
    assert not data or data.startswith(b"HTTP/1.1 "), f"response does not start with a status line: {data[:80]!r}"
    outcome.statuses = [int(code) for code in _STATUS_LINE.findall(data)]
    assert all(100 <= code < 600 for code in outcome.statuses)
    assert 500 not in outcome.statuses, f"server error on fuzz input: {data[:300]!r}"
    assert outcome.handled <= len(outcome.statuses) + 1, (
        f"handler ran {outcome.handled}x for {len(outcome.statuses)} responses"
    )


# --- strategies: mostly well-shaped HTTP with hostile details, sometimes raw noise ------------

_METHODS = st.sampled_from(
    [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"CONNECT", b"PRI", b"G\x00T", b""]
)
_TARGETS = st.sampled_from([
    b"/", b"/api/items?x=1", b"*", b"http://example.com/a", b"//double", b"/%00", b"/a b", b"/../../etc",
    b"example.com:443", b"/" + b"a" * 3000,
])
_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"HTTP/9", b"http/1.1", b""])
_NAMES = st.sampled_from([
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade", b"Authorization",
    b"Content-Length ", b" Transfer-Encoding", b"X-Forwarded-For", b"Te", b"Trailer", b"X\x00Y", b"",
])
_VALUES = st.one_of(
    st.sampled_from([
        b"0", b"5", b"-1", b"18446744073709551616", b"5, 5", b"+5", b" 5", b"chunked", b"Chunked", b"xchunked",
        b"chunked, identity", b"identity", b"gzip, chunked", b"keep-alive", b"close", b"Upgrade",
        b"100-continue", b"h2c", b"websocket", b"", b"a\rb", b"\tchunked",
    ]),
    st.binary(max_size=40),
)
_EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
_BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.sampled_from([b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
                     b"ffffffffffffffffff\r\n", b"-1\r\n", b"5\r\nhel", b"2\nxx\n0\n\n"]),
)


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    """One or more (pipelined) requests with hostile details."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        eol = draw(_EOL)
        out += draw(_METHODS) + b" " + draw(_TARGETS) + b" " + draw(_VERSIONS) + eol
        for _ in range(draw(st.integers(0, 6))):
            out += draw(_NAMES) + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + draw(_VALUES) + draw(_EOL)
        out += eol + draw(_BODIES)
    return out


@st.composite
def http_pieces(draw: st.DrawFn) -> list[bytes]:
    """A request stream (or raw noise) cut into arbitrary pieces, as TCP may deliver it."""
    data = draw(st.one_of(http_requests(), http_requests(), st.binary(min_size=1, max_size=500)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [data]
