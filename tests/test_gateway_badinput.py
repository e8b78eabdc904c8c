# ruff: noqa: F811 - the gateway fixture is imported from tests.test_gateway and used as a parameter
"""Malformed, smuggling-shaped, oversized and slow requests against the gateway, over raw sockets."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.test_gateway import Gateway, gateway, keys, upstreams, wait_for  # noqa: F401 - fixtures

HOST = b"Host: gw.test\r\n"


def exchange(gateway: Gateway, data: bytes, pause_s: float = 0.0, read_timeout_s: float = 5.0) -> tuple[int, bytes]:
    """Send raw bytes; return the status of the first answer and whether the server closed."""
    with socket.create_connection(("127.0.0.1", gateway.service.port), timeout=read_timeout_s) as sock:
        sock.sendall(data)
        if pause_s:
            time.sleep(pause_s)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else 0
    return status, received


def assert_closed_with(gateway: Gateway, data: bytes, status: int) -> bytes:
    code, received = exchange(gateway, data)
    assert code == status, received[:200]
    assert b"connection: close" in received.lower()
    assert b'"error"' in received
    return received


SMUGGLING = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "bad header": b"GET / HTTP/1.1\r\n" + HOST + b"Bad Header\r\n\r\n",
    "content-length with transfer-encoding": b"POST /open HTTP/1.1\r\n" + HOST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "duplicate differing content-length": b"POST /open HTTP/1.1\r\n" + HOST
    + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "obsolete line folding": b"GET /open HTTP/1.1\r\n" + HOST + b"X-A: b\r\n c\r\n\r\n",
    "bad chunk size": b"POST /open HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "unknown transfer coding": b"POST /open HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
    "negative content-length": b"POST /open HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_malformed_and_smuggling_shapes_are_400_and_close(gateway: Gateway, name: str) -> None:
    assert_closed_with(gateway, SMUGGLING[name], 400)
    assert httpx.get(gateway.url + "/open").status_code == 200


def test_bad_chunk_after_valid_start_is_400(gateway: Gateway) -> None:
    data = (b"POST /open HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nxyz\r\n")
    assert_closed_with(gateway, data, 400)
    assert httpx.get(gateway.url + "/open").status_code == 200


def send_in_parts(gateway: Gateway, parts: list[bytes], pause_s: float) -> bytes:
    """Send each part after a pause (the gateway is mid-request in between); return all it answered."""
    with socket.create_connection(("127.0.0.1", gateway.service.port), timeout=5) as sock:
        for index, part in enumerate(parts):
            if index:
                time.sleep(pause_s)
            sock.sendall(part)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nhelloXX"], ids=["bad-size", "bad-chunk-end"])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ["/open", "/stream"])
def test_bad_chunk_mid_request_is_400_then_close(gateway: Gateway, bad: bytes, method: str, path: str) -> None:
    # GET: the upstream answers before reading the body and then drops the connection on the chunk
    # it takes for a request; the gateway still answers the malformed body with 400, not 200/500/502.
    head = b"%s %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n" % (method.encode(), path.encode(), HOST)
    received = send_in_parts(gateway, [head + b"5\r\nhello\r\n", bad], pause_s=0.3)
    assert received.startswith(b"HTTP/1.1 400 "), received[:200]
    assert received.count(b"HTTP/1.1 ") == 1 and b"connection: close" in received.lower()
    assert b'"error":"bad_request"' in received.replace(b" ", b"")


def test_malformed_request_pipelined_behind_valid_ones_gets_its_own_400(gateway: Gateway) -> None:
    data = b"GET /p1 HTTP/1.1\r\n" + HOST + b"\r\n" + b"GET /p2 HTTP/1.1\r\n" + HOST + b"\r\nGARBAGE\r\n\r\n"
    _, received = exchange(gateway, data)
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert [answer[:3] for answer in answers] == [b"200", b"200", b"400"], received[:300]
    assert b"connection: close" not in answers[0].lower() and b"connection: close" in answers[2].lower()
    assert b'"error":"bad_request"' in answers[2]


def test_oversized_headers_are_431(gateway: Gateway) -> None:
    big = b"GET /open HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n"
    assert_closed_with(gateway, big, 431)
    many = b"GET /open HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 50) for i in range(100)) + b"\r\n"
    assert_closed_with(gateway, many, 431)
    endless = b"GET /open HTTP/1.1\r\n" + HOST + b"X-Endless: " + b"a" * 20000  # no end of headers at all
    assert_closed_with(gateway, endless, 431)


def test_body_over_route_limit_is_413(gateway: Gateway) -> None:
    declared = b"POST /upload/x HTTP/1.1\r\n" + HOST + b"Content-Length: 5000\r\n\r\n" + b"a" * 5000
    assert_closed_with(gateway, declared, 413)
    chunk = b"a" * 800
    chunked = (b"POST /upload/x HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
               + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 3 + b"0\r\n\r\n")
    code, received = exchange(gateway, chunked)
    assert code == 413, received[:200]
    small = httpx.post(gateway.url + "/upload/x", content=b"a" * 900)
    assert small.status_code == 200


def test_slow_headers_are_408(gateway: Gateway) -> None:
    code, received = exchange(gateway, b"GET /open HTTP/1.1\r\nHost: gw", read_timeout_s=5)
    assert code == 408, received
    assert b"connection: close" in received


def test_idle_connection_gets_408_then_close(gateway: Gateway) -> None:
    code, received = exchange(gateway, b"", read_timeout_s=5)
    assert code == 408, received


def test_slow_body_is_408(gateway: Gateway) -> None:
    code, received = exchange(gateway, b"POST /open HTTP/1.1\r\n" + HOST + b"Content-Length: 100\r\n\r\nabc",
                              read_timeout_s=5)
    assert code == 408, received[:200]


def test_keep_alive_then_idle_close_is_silent(gateway: Gateway) -> None:
    code, received = exchange(gateway, b"GET /open HTTP/1.1\r\n" + HOST + b"\r\n", read_timeout_s=5)
    assert code == 200
    assert received.count(b"HTTP/1.1 ") == 1  # closed after the idle timeout without a 408


def test_pipelined_requests_answer_in_order(gateway: Gateway) -> None:
    data = b"".join(b"GET /p%d HTTP/1.1\r\n%s\r\n" % (i, HOST) for i in range(5))
    data += b"GET /last HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    _, received = exchange(gateway, data)
    paths = [part.split(b'"path": "')[1].split(b'"')[0] for part in received.split(b"HTTP/1.1 200")[1:]]
    assert paths == [b"/p0", b"/p1", b"/p2", b"/p3", b"/p4", b"/last"]


def test_no_connection_leaks_after_bad_input(gateway: Gateway) -> None:
    for data in SMUGGLING.values():
        exchange(gateway, data)
    wait_for(lambda: len(gateway.service._server.connections) == 0, timeout_s=5)  # type: ignore[union-attr]
    metrics = httpx.get(gateway.admin + "/metrics").text
    assert 'gatewatch_proxy_rejected_requests_total{code="bad_request"}' in metrics
