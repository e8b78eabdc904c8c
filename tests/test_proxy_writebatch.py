# ruff: noqa: F811 - the gateway fixture is imported from tests.test_gateway and used as a parameter
"""Whole answers and upstream requests are written at the end of the loop pass that made them
(`proxy.flow.WriteBatch`): held writes keep their order, reach their transport once, and are
delivered before the connection closes."""

from __future__ import annotations

import asyncio

import pytest

from proxy.flow import WriteBatch
from proxy.policy import Exchange, Response
from tests.faults.httpprobe import answered_until_close
from tests.test_gateway import Gateway, gateway, keys, upstreams  # noqa: F401 - fixtures


class RecordingTransport:
    """The two transport methods WriteBatch uses, recording what was written."""

    def __init__(self, closing: bool = False) -> None:
        self.written: list[bytes] = []
        self.closing = closing

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing


def test_writes_are_held_until_the_pass_ends_then_written_in_order() -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[bytes], int]:
        loop = asyncio.get_running_loop()
        batch, first, second = WriteBatch(), RecordingTransport(), RecordingTransport()
        for transport, data in ((first, b"a"), (second, b"b"), (first, b"c")):
            batch.write(loop, transport, data)  # type: ignore[arg-type]
        during = first.written + second.written
        await asyncio.sleep(0)
        return during, first.written, second.written, len(batch)

    during, first, second, held_after = asyncio.run(main())
    assert during == []
    assert first == [b"a", b"c"]
    assert second == [b"b"]
    assert held_after == 0


def test_flush_writes_at_once_and_skips_closed_transports() -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[bytes]]:
        loop = asyncio.get_running_loop()
        batch, open_, closed = WriteBatch(), RecordingTransport(), RecordingTransport(closing=True)
        batch.write(loop, open_, b"answer")  # type: ignore[arg-type]
        batch.write(loop, closed, b"lost")  # type: ignore[arg-type]
        batch.flush()
        flushed = list(open_.written)
        await asyncio.sleep(0)  # the scheduled flush finds nothing left: no second write
        return flushed, open_.written, closed.written

    flushed, after_pass, closed = asyncio.run(main())
    assert flushed == [b"answer"]
    assert after_pass == [b"answer"]
    assert closed == []


def test_a_write_from_another_loop_is_not_held() -> None:
    batch, transport = WriteBatch(), RecordingTransport()
    first = asyncio.new_event_loop()
    try:
        batch.write(first, RecordingTransport(), b"held")  # type: ignore[arg-type]  # held for `first`'s next pass

        async def other() -> list[bytes]:
            batch.write(asyncio.get_running_loop(), transport, b"direct")  # type: ignore[arg-type]
            return list(transport.written)

        assert asyncio.run(other()) == [b"direct"]
    finally:
        first.close()


@pytest.mark.parametrize("last", [b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                  b"GET /last HTTP/1.0\r\nHost: t\r\n\r\n"])
def test_pipelined_answers_arrive_in_order_before_the_close(last: bytes) -> None:
    async def echo_path(exchange: Exchange) -> Response:
        return Response(200, body=exchange.request.path.encode())

    data = b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(8)) + last
    received = answered_until_close(echo_path, data)
    bodies = [part.rsplit(b"\r\n\r\n", 1)[1] for part in received.split(b"HTTP/1.1 200 OK")[1:]]
    assert [body[:5] for body in bodies] == [b"/p%d" % i for i in range(8)] + [b"/last"]
    assert b"connection: close" in received.rsplit(b"HTTP/1.1 200 OK", 1)[1].lower()


def test_a_burst_of_connections_through_the_gateway_gets_every_answer_right(gateway: Gateway) -> None:
    """40 clients at once, two keep-alive requests each: the upstream requests of one pass go out
    together, and every client gets the answers to its own requests."""

    async def client(i: int) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.service.port)
        paths = []
        for j in range(2):
            writer.write(b"GET /burst/%d/%d HTTP/1.1\r\nHost: gw.test\r\n\r\n" % (i, j))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await asyncio.wait_for(reader.readexactly(length), 10)
            assert head.startswith(b"HTTP/1.1 200 "), head
            paths.append(body.split(b'"path": "')[1].split(b'"')[0].decode())
        writer.close()
        return paths

    async def main() -> list[list[str]]:
        return list(await asyncio.gather(*(client(i) for i in range(40))))

    assert asyncio.run(main()) == [[f"/burst/{i}/0", f"/burst/{i}/1"] for i in range(40)]
