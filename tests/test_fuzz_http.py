"""Fuzzing the proxy's HTTP/1.1 parsing: hostile request streams never crash, hang or 500."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.faults.fuzz_http import HttpFuzzer, http_pieces
from tests.faults.harness import Scale

EXAMPLES = Scale.from_env().examples


@pytest.fixture(scope="module")
def fuzzer():
    fuzzer = HttpFuzzer()
    yield fuzzer
    fuzzer.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(pieces=http_pieces())
def test_http_listener_survives_hostile_streams(fuzzer: HttpFuzzer, pieces: list[bytes]):
    fuzzer.run(pieces)


def test_fuzzer_sees_normal_requests(fuzzer: HttpFuzzer):
    outcome = fuzzer.run([b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"])
    assert outcome.statuses == [200, 200] and outcome.handled == 2


def test_fuzzer_sees_rejections(fuzzer: HttpFuzzer):
    outcome = fuzzer.run([b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"])
    assert outcome.statuses == [400] and outcome.handled == 0
