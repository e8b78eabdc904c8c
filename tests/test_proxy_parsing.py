"""What the listener makes of a request's bytes: the memo tables behind field names, methods and
host names, and the HTTP version it records without asking the parser for the usual request."""

from __future__ import annotations

import sys

import pytest

from proxy.headers import FIELD_NAMES, HOST_NAMES, METHODS
from proxy.memo import Memo
from proxy.policy import Exchange, Response
from tests.faults.httpprobe import answered_until_close


def test_a_memo_makes_each_value_once_and_empties_when_full() -> None:
    made: list[int] = []

    def square(key: int) -> int:
        made.append(key)
        return key * key

    memo = Memo(square, limit=3)
    assert [memo[2], memo[2], memo[3]] == [4, 4, 9]
    assert made == [2, 3]
    for key in range(10, 20):  # made-up keys: the table never holds more than its limit
        assert memo[key] == key * key
        assert len(memo) <= 3


def test_field_names_are_lower_case_latin_1_and_interned() -> None:
    name = FIELD_NAMES[b"Content-Length"]
    assert name == "content-length"
    assert name is sys.intern("content-length")  # so `Headers.get` compares by identity
    assert FIELD_NAMES[b"X-\xe9t\xe9"] == "x-\xe9t\xe9"
    assert METHODS[b"PATCH"] == "PATCH"


@pytest.mark.parametrize(("host", "name"), [
    ("api.example.com:8443", "api.example.com"), ("API.Example.com", "api.example.com"),
    ("[::1]:8080", "[::1]"), ("[::1]", "[::1]"), ("10.0.0.1:80", "10.0.0.1"), ("", ""),
])
def test_host_names_drop_the_port_and_keep_ipv6_brackets(host: str, name: str) -> None:
    assert HOST_NAMES[host] == name


@pytest.mark.parametrize(("head", "version", "closes"), [
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", "1.1", False),
    (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "1.1", True),
    (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n", "1.1", False),
    (b"GET / HTTP/1.0\r\nHost: t\r\n\r\n", "1.0", True),
    (b"GET / HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n", "1.0", False),
])
def test_the_request_version_is_the_one_the_client_sent(head: bytes, version: str, closes: bool) -> None:
    async def echo_version(exchange: Exchange) -> Response:
        return Response(200, body=exchange.request.version.encode())

    # a second request, closing: the answer to the first one shows whether it kept the connection
    closing = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    answers = answered_until_close(echo_version, head + closing).split(b"HTTP/1.1 200 OK")[1:]
    assert answers[0].endswith(b"\r\n\r\n" + version.encode())
    assert len(answers) == (1 if closes else 2)
