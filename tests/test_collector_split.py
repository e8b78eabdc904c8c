"""The collector's pure parts: per-trace splitting, id validation, OTLP/JSON ids, decompression."""

from __future__ import annotations

import gzip
import json
import zlib

import cramjam
import lz4.frame
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.codec import Encoding, decode_json, decode_protobuf, decompress, encode_response, encoding_of, zstd
from collector.errors import InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from collector.split import split_by_trace, varint
from tests.collector_helpers import make_request, spans_of


def decoded(result):
    return [(m.key, ExportTraceServiceRequest.FromString(m.value)) for m in result.messages]


def test_one_message_per_trace_keeps_resource_and_scope():
    request = make_request(spans=24, per_trace=6, resources=2, scopes=2)
    result = split_by_trace(request, 1_000_000)
    assert (result.accepted, result.rejected, len(result.messages)) == (24, 0, 4)
    seen = []
    for key, message in decoded(result):
        trace_ids = {span.trace_id for span in spans_of(message)}
        assert trace_ids == {bytes.fromhex(key.decode())} and key == key.lower()
        for rs in message.resource_spans:
            r = int(rs.schema_url.rsplit("/", 1)[1])
            assert rs.resource == request.resource_spans[r].resource
            for ss in rs.scope_spans:
                s = int(ss.schema_url.rsplit("/", 1)[1])
                assert ss.scope == request.resource_spans[r].scope_spans[s].scope
                original = {sp.span_id: sp for sp in request.resource_spans[r].scope_spans[s].spans}
                assert all(original[sp.span_id] == sp for sp in ss.spans)  # spans stay in their block
        seen.extend(spans_of(message))
    assert sorted(s.span_id for s in seen) == sorted(s.span_id for s in spans_of(request))


def test_large_trace_is_split_under_the_limit_with_one_key():
    request = make_request(spans=200, per_trace=200, resources=2, scopes=2)
    limit = 8_000
    result = split_by_trace(request, limit)
    assert len(result.messages) > 5 and result.rejected == 0
    assert all(len(m.value) <= limit for m in result.messages)
    assert len({m.key for m in result.messages}) == 1
    ids = [s.span_id for _, message in decoded(result) for s in spans_of(message)]
    assert sorted(ids) == sorted(s.span_id for s in spans_of(request))


def test_invalid_ids_are_rejected_individually():
    request = make_request(spans=8, per_trace=2)
    spans = spans_of(request)
    spans[0].trace_id = bytes(16)
    spans[1].trace_id = b"\x01" * 15
    spans[2].span_id = bytes(8)
    spans[3].span_id = b""
    spans[4].parent_span_id = b"\x01\x02"
    result = split_by_trace(request, 1_000_000)
    assert (result.accepted, result.rejected) == (3, 5)
    assert set(result.errors) == {"invalid_trace_id", "invalid_span_id", "invalid_parent_span_id"}
    assert "2 spans rejected: invalid trace_id" in result.error_message


def test_timestamps_past_2262_are_rejected():
    request = make_request(spans=3, per_trace=1)
    spans = spans_of(request)
    spans[0].end_time_unix_nano = 2**63
    spans[1].events.add(time_unix_nano=2**64 - 1, name="late")
    result = split_by_trace(request, 1_000_000)
    assert (result.accepted, result.rejected, result.errors) == (1, 2, {"invalid_timestamp": 2})


def test_span_above_the_message_limit_is_rejected():
    request = make_request(spans=2, per_trace=1)
    spans_of(request)[0].attributes.add(key="big").value.string_value = "x" * 5000
    result = split_by_trace(request, 2000)
    assert (result.accepted, result.rejected) == (1, 1) and "span_too_large" in result.errors


def test_varint_matches_protobuf():
    from google.protobuf.internal.encoder import _VarintBytes

    for value in (0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35 - 1):
        assert varint(value) == _VarintBytes(value)


def test_otlp_json_with_hex_ids_and_int_enums():
    request = make_request(spans=2, per_trace=2)
    span = spans_of(request)[0]
    document = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "s"}, "spans": [
            {"traceId": span.trace_id.hex(), "spanId": span.span_id.hex(), "parentSpanId": "",
             "name": "x", "kind": 2, "startTimeUnixNano": "1", "endTimeUnixNano": 2,
             "status": {"code": 2}, "unknownField": 1,
             "links": [{"traceId": span.trace_id.hex().upper(), "spanId": "0102030405060708"}]},
            {"traceId": "not-hex", "spanId": span.span_id.hex(), "name": "bad"},
        ]}]}]}
    parsed = decode_json(json.dumps(document).encode())
    first, second = spans_of(parsed)
    assert first.trace_id == span.trace_id and first.span_id == span.span_id and first.kind == 2
    assert first.links[0].trace_id == span.trace_id and first.status.code == 2
    assert second.trace_id == b""  # invalid hex -> rejected by validation, not a 400
    assert split_by_trace(parsed, 1_000_000).rejected == 1


@pytest.mark.parametrize("body", [
    b"{", b"[]", b'{"resourceSpans": 5}', b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}',
    b"\xff\xfe", b"[" * 100_000,
])
def test_invalid_json_is_invalid_payload(body):
    with pytest.raises(InvalidPayload):
        decode_json(body)


def test_truncated_protobuf_is_invalid_payload():
    body = make_request(spans=4).SerializeToString()
    with pytest.raises(InvalidPayload):
        decode_protobuf(body[: len(body) // 2])


def test_content_types():
    assert encoding_of("application/x-protobuf") is Encoding.PROTOBUF
    assert encoding_of("Application/JSON; charset=utf-8") is Encoding.JSON
    for bad in ("", "text/plain", "application/protobuf-ish"):
        with pytest.raises(UnsupportedMediaType):
            encoding_of(bad)


def test_decompress_gzip_deflate_and_limits():
    data = b"span" * 1000
    assert decompress(gzip.compress(data), "gzip", 10_000) == data
    assert decompress(gzip.compress(data[:10]) + gzip.compress(data[10:]), "gzip", 10_000) == data  # two members
    assert decompress(zlib.compress(data), "deflate", 10_000) == data
    assert decompress(data, "identity", 10) == data  # the raw-size limit is the receiver's job
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b"\0" * 1_000_000), "gzip", 100_000)  # a small bomb stops at the limit
    for bad in (b"not gzip", gzip.compress(data)[:-12]):
        with pytest.raises(InvalidPayload):
            decompress(bad, "gzip", 10_000)
    with pytest.raises(InvalidPayload):
        decompress(data, "br", 10_000)


@pytest.mark.parametrize("name,compress", [("zstd", zstd.compress), ("lz4", lz4.frame.compress)])
def test_decompress_zstd_and_lz4_frames_and_limits(name, compress):
    data = b"span" * 1000
    assert decompress(compress(data), name, 10_000) == data
    assert decompress(compress(data[:10]) + compress(data[10:]), name, 10_000) == data  # two frames
    assert decompress(compress(data), name, len(data)) == data  # exactly at the limit
    with pytest.raises(PayloadTooLarge):
        decompress(compress(data), name, len(data) - 1)
    with pytest.raises(PayloadTooLarge):
        decompress(compress(b"\0" * 10_000_000), name, 100_000)  # a small bomb stops at the limit
    for bad in (b"not compressed at all", compress(data)[:-6], compress(data) + b"trailing garbage"):
        with pytest.raises(InvalidPayload):
            decompress(bad, name, 10_000)


def test_decompress_snappy_block_and_framed_and_limits():
    data = b"span" * 40_000  # over one 64 KiB chunk of the framing format
    block, framed = bytes(cramjam.snappy.compress_raw(data)), bytes(cramjam.snappy.compress(data))
    for name, body in (("snappy", block), ("snappy", framed), ("x-snappy-framed", framed)):
        assert decompress(body, name, len(data)) == data  # exactly at the limit
        with pytest.raises(PayloadTooLarge):
            decompress(body, name, len(data) - 1)
    two_streams = bytes(cramjam.snappy.compress(data[:10])) + framed
    assert decompress(two_streams, "x-snappy-framed", 1 << 20) == data[:10] + data
    padded = framed[:10] + b"\xfe\x03\x00\x00pad" + framed[10:]  # skippable chunks are skipped
    assert decompress(padded, "snappy", 1 << 20) == data
    bad_checksum = framed[:14] + bytes([framed[14] ^ 1]) + framed[15:]
    reserved = framed + b"\x02\x01\x00\x00x"  # an unskippable chunk type
    for name, bad in (("snappy", block[:-5]), ("snappy", b"\x05garbage"), ("x-snappy-framed", block),
                      ("snappy", framed[:-3]), ("snappy", bad_checksum), ("snappy", reserved)):
        with pytest.raises(InvalidPayload):
            decompress(bad, name, 1 << 20)


@pytest.mark.parametrize("window_log,accepted", [(23, True), (24, False), (27, False)])
def test_zstd_frames_declaring_a_window_over_8_mib_are_refused(window_log, accepted):
    streaming = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: window_log})
    frame = streaming.compress(b"x" * 100) + streaming.flush()  # no content size: the window is kept
    if accepted:
        assert decompress(frame, "zstd", 200 << 20) == b"x" * 100
    else:
        with pytest.raises(InvalidPayload, match="memory"):
            decompress(frame, "zstd", 200 << 20)  # however large the body limit


def test_json_response_encodes_partial_success():
    body = json.loads(encode_response(Encoding.JSON, 3, "3 spans rejected"))
    assert body == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "3 spans rejected"}}
    assert json.loads(encode_response(Encoding.JSON)) == {}
    assert encode_response(Encoding.PROTOBUF) == b""
