"""The engine's callback path: a bodiless request on a pooled upstream connection is answered from
the connections' callbacks, with no task (proxy.upstream.UpstreamCaller, proxy.server). These check
what the awaiting path did and the callback path must keep doing: retry a pooled connection the
upstream closed, time out, drain on stop, answer pipelined requests in order, survive a failing
policy. And a streamed answer nobody reads to its end closes its upstream connection, on either
path. Real sockets on 127.0.0.1, one event loop per test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from proxy import controlplane
from proxy.bodies import close_body
from proxy.policy import CallNext, Exchange, Headers, Request, Response, answered, build_chain
from proxy.server import HttpServer
from proxy.upstream import Cluster, Endpoint, UpstreamCaller

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Upstream:
    """A raw upstream: answers each request with `OK` after `delay_s`, counts connections; with
    `drop_next` it closes the connection of the next request instead of answering it (an upstream
    whose keep-alive timeout ran out as the request arrived)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.drop_next = False
        self.connections = 0
        self.closed: list[int] = []  # requests answered on each connection, in the order they closed
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        answered = 0
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if self.drop_next:
                    self.drop_next = False
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(OK)
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.append(answered)
            writer.close()

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.05)
        if self.server is not None:
            self.server.close()


async def gateway(upstream: Upstream, timeout_s: float | None = None,
                  policies: tuple[Callable[[Exchange, CallNext], Awaitable[Response]], ...] = (),
                  caller: UpstreamCaller | None = None) -> HttpServer:
    """An engine listener in front of `upstream`: route everything there, then `policies`."""
    cluster = Cluster("up", [Endpoint("127.0.0.1", upstream.port)])

    class Route:
        name = "route"

        def handle(self, exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
            exchange.upstream, exchange.timeout_s = cluster, timeout_s
            return call_next(exchange)

    class Wrapped:
        def __init__(self, handle: Callable[[Exchange, CallNext], Awaitable[Response]]) -> None:
            self.name = "test"
            self.handle = handle

    server = HttpServer(build_chain([Route(), *map(Wrapped, policies)], caller or UpstreamCaller()))
    await server.start()
    return server


async def get(port: int, requests: int = 1, path: bytes = b"/") -> list[bytes]:
    """Send `requests` pipelined GETs on one connection; the answers' status lines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((b"GET " + path + b" HTTP/1.1\r\nhost: t\r\n\r\n") * requests)
    statuses = []
    try:
        for _ in range(requests):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            statuses.append(head.split(b"\r\n", 1)[0])
    finally:
        writer.close()
    return statuses


def test_a_pooled_connection_the_upstream_closed_is_retried_on_a_new_one() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        upstream = Upstream()
        await upstream.start()
        server = await gateway(upstream)
        first = await get(server.port)
        upstream.drop_next = True  # the pooled connection closes as the next request reaches it
        second = await get(server.port)
        await server.stop(1.0)
        await upstream.stop()
        return first, second, upstream.connections

    first, second, connections = asyncio.run(scenario())
    assert first == second == [b"HTTP/1.1 200 OK"]
    assert connections == 2


def test_no_answer_within_the_route_timeout_is_504_and_the_connection_is_not_reused() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        upstream = Upstream()
        await upstream.start()
        server = await gateway(upstream, timeout_s=0.2)
        upstream.delay_s = 0.0
        warm = await get(server.port)  # leaves a pooled connection: the next request takes the callback path
        upstream.delay_s = 0.5
        late = await get(server.port)
        upstream.delay_s = 0.0
        after = await get(server.port)
        await server.stop(1.0)
        await upstream.stop()
        return warm + late, after, upstream.connections

    answers, after, connections = asyncio.run(scenario())
    assert answers == [b"HTTP/1.1 200 OK", b"HTTP/1.1 504 Gateway Timeout"]
    assert after == [b"HTTP/1.1 200 OK"]
    assert connections == 2  # the timed-out connection was closed, not pooled


def test_stop_drains_a_request_in_flight_on_the_callback_path() -> None:
    async def scenario() -> list[bytes]:
        upstream = Upstream()
        await upstream.start()
        server = await gateway(upstream)
        await get(server.port)
        upstream.delay_s = 0.3
        pending = asyncio.ensure_future(get(server.port))
        await asyncio.sleep(0.1)
        assert any(conn.busy for conn in server.connections), "the request is in flight"
        await server.stop(5.0)
        answers = await pending
        await upstream.stop()
        return answers

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK"]


def test_many_pipelined_requests_answered_at_once_come_back_in_order() -> None:
    """A policy that answers without the upstream answers within the dispatch loop, not by recursion."""

    def limited(exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        if exchange.request.path == "/limited":
            return answered(Response.json(429, {"error": "rate_limited"}))
        return call_next(exchange)

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        upstream = Upstream()
        await upstream.start()
        server = await gateway(upstream, policies=(limited,))
        many = await get(server.port, requests=3000, path=b"/limited")
        mixed = await get(server.port, requests=20)
        await server.stop(1.0)
        await upstream.stop()
        return many, mixed

    many, mixed = asyncio.run(scenario())
    assert many == [b"HTTP/1.1 429 Too Many Requests"] * 3000
    assert mixed == [b"HTTP/1.1 200 OK"] * 20


def test_a_policy_that_raises_gets_500_and_the_connection_goes_on() -> None:
    def broken(exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        if exchange.request.path == "/broken":
            raise RuntimeError("a bug in a policy")
        return call_next(exchange)

    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        upstream = Upstream()
        await upstream.start()
        server = await gateway(upstream, policies=(broken,))
        failed = await get(server.port, path=b"/broken")
        fine = await get(server.port, requests=2)
        inflight = server.inflight
        await server.stop(1.0)
        await upstream.stop()
        return failed, fine, inflight

    failed, fine, inflight = asyncio.run(scenario())
    assert failed == [b"HTTP/1.1 500 Internal Server Error"]
    assert fine == [b"HTTP/1.1 200 OK"] * 2
    assert inflight == 0


def test_a_request_pipelined_before_garbage_is_answered_before_the_400() -> None:
    async def scenario() -> bytes:
        upstream = Upstream()
        await upstream.start()
        server = await gateway(upstream)
        await get(server.port)  # a pooled connection: the first request takes the callback path
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\nGARBAGE\r\n\r\n")
        received = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        writer.close()
        await server.stop(1.0)
        await upstream.stop()
        return received

    received = asyncio.run(scenario())
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 400 Bad Request" in received
    assert received.index(b"200 OK") < received.index(b"400 Bad Request")


async def impatient(exchange: Exchange, call_next: CallNext) -> Response:
    """An `async def` policy that stops waiting for the upstream after 0.05 s (503)."""
    try:
        return await asyncio.wait_for(call_next(exchange), 0.05)
    except TimeoutError:
        return Response.json(503, {"error": "impatient"})


def test_an_answer_its_awaiting_policy_gave_up_on_does_not_keep_its_connection() -> None:
    """An `async def` policy awaits the callback path's Pending; when it stops waiting (cancelled),
    the connection whose answer nobody will read is closed, not left open or pooled."""

    async def scenario() -> tuple[list[bytes], list[bytes], int, int]:
        upstream = Upstream()
        await upstream.start()
        caller = UpstreamCaller()
        server = await gateway(upstream, policies=(impatient,), caller=caller)
        warm = await get(server.port)
        upstream.delay_s = 0.3
        gave_up = await get(server.port)
        during = caller.pool.open_connections
        await asyncio.sleep(0.5)  # the upstream answers the abandoned request meanwhile
        after = caller.pool.open_connections
        await server.stop(1.0)
        await upstream.stop()
        return warm, gave_up, during, after

    warm, gave_up, during, after = asyncio.run(scenario())
    assert warm == [b"HTTP/1.1 200 OK"]
    assert gave_up == [b"HTTP/1.1 503 Service Unavailable"]
    assert (during, after) == (1, 0)


async def settled(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait until `condition()` is true, at most `timeout_s` (the assertions then say what was not)."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"


class StreamingUpstream(Upstream):
    """Answers with a chunked body it never finishes (a long stream), after `delay_s`; with
    `drop_next` the next request's connection is closed unanswered instead."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.drop_next:
                self.drop_next = False
                return
            await asyncio.sleep(self.delay_s)
            writer.write(STREAM_HEAD)
            await reader.read()  # until the proxy closes its end
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.append(0)
            writer.close()


def test_an_unread_streamed_body_closes_its_connection() -> None:
    """A streamed response nobody reads (a retry policy dropping a failed try) closes its upstream
    connection when the body is closed, even though it was never started."""

    async def scenario() -> tuple[int, int, list[int]]:
        upstream = StreamingUpstream()
        await upstream.start()
        caller = UpstreamCaller()
        exchange = Exchange(Request("GET", "/", "", Headers([("host", "t")])), "127.0.0.1")
        exchange.upstream = Cluster("up", [Endpoint("127.0.0.1", upstream.port)])
        response = await caller(exchange)
        during = caller.pool.open_connections
        assert not isinstance(response.body, bytes), "streamed, not read whole"
        await close_body(response.body)
        after = caller.pool.open_connections
        await settled(lambda: upstream.closed)
        closed = list(upstream.closed)
        await upstream.stop()
        return during, after, closed

    during, after, closed = asyncio.run(scenario())
    assert (during, after) == (1, 0)
    assert closed == [0], "the upstream saw its connection closed"


def test_a_control_plane_answer_refused_for_its_size_closes_its_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decisions client stops reading an answer over its size limit: it closes the body (and
    with it the connection) rather than leave it half read."""
    closed: list[bool] = []

    class Endless:
        def __aiter__(self) -> Endless:
            return self

        async def __anext__(self) -> bytes:
            return b"x" * 1024

        async def aclose(self) -> None:
            closed.append(True)

    monkeypatch.setattr(controlplane, "MAX_SNAPSHOT_BYTES", 4096)
    with pytest.raises(ValueError, match="over 4096 bytes"):
        asyncio.run(controlplane._read(Endless()))
    assert closed == [True]


def test_a_retried_streamed_answer_its_awaiting_policy_gave_up_on_closes_its_connection() -> None:
    """The callback path's one retry (the pooled connection was closed under it) runs as a task of
    its own; when the policy awaiting it has given up by the time a streamed answer arrives, that
    connection is closed at once, not left to the upstream's idle close."""

    async def scenario() -> tuple[list[bytes], int, int]:
        upstream = StreamingUpstream()
        await upstream.start()
        caller = UpstreamCaller()
        server = await gateway(upstream, policies=(impatient,), caller=caller)
        # The callback path needs a pooled connection, and this upstream's answers never end, so
        # none comes back to the pool by itself: pool a fresh one by hand.
        conn = await caller.pool.connect(Endpoint("127.0.0.1", upstream.port), 1.0)
        conn.keep_alive, conn.complete = True, True
        caller.pool.release(conn)
        upstream.drop_next, upstream.delay_s = True, 0.2
        gave_up = await get(server.port)
        await settled(lambda: caller.pool.open_connections == 0)  # the retry's answer arrives meanwhile
        after = caller.pool.open_connections
        await server.stop(1.0)
        await upstream.stop()
        return gave_up, upstream.connections, after

    gave_up, connections, after = asyncio.run(scenario())
    assert gave_up == [b"HTTP/1.1 503 Service Unavailable"]
    assert connections == 2, "the request was retried on a new connection"
    assert after == 0
