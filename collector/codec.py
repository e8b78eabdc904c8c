"""OTLP wire encodings: request bodies in (protobuf, JSON; gzip, deflate, zstd, lz4 or snappy) and responses out.

OTLP/JSON differs from protobuf's canonical JSON in one way that matters here: trace and span
ids are hex strings, not base64. Ids that are not valid hex become empty, so that the span is
rejected by validation (partial success) instead of failing the whole request.
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

import cramjam
import lz4.frame
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.errors import InvalidPayload, PayloadTooLarge, UnsupportedMediaType

# The one place that picks zstd's module (tests import it from here too).
if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


class Encoding(Enum):
    """The two OTLP/HTTP payload encodings, by their Content-Type."""

    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def encoding_of(content_type: str) -> Encoding:
    """The payload encoding of a Content-Type header value, or UnsupportedMediaType."""
    media = content_type.split(";", 1)[0].strip().lower()
    for encoding in Encoding:
        if media == encoding.value:
            return encoding
    raise UnsupportedMediaType(
        f"unsupported Content-Type {media or '(none)'!r}: use application/x-protobuf or application/json"
    )


class _Decompressor(Protocol):
    """zlib's decompressobj interface, which the zstd and lz4 frame decompressors share."""

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...


def _zstd_decompressor() -> _Decompressor:
    """A zstd decoder that refuses frames declaring a window over 8 MiB.

    The decoder allocates the window a frame declares. zstd's own cap is 128 MiB, which 16 request
    threads could each be made to allocate. Levels 1-19 (and the Go encoder the OpenTelemetry
    Collector uses) stay within 8 MiB; only --ultra or --long frames need more.
    """
    return zstd.ZstdDecompressor(options={zstd.DecompressionParameter.window_log_max: 23})


def _gzip_decompressor() -> _Decompressor:
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def _zlib_decompressor() -> _Decompressor:
    return zlib.decompressobj(zlib.MAX_WBITS)


# The framing format's stream identifier chunk, which every framed snappy stream starts with.
_SNAPPY_STREAM = b"\xff\x06\x00\x00sNaPpY"
# The framing format's bound on one chunk's uncompressed data.
_SNAPPY_CHUNK_MAX = 65536


class _OverLimit(Exception):
    """A decoder found, before decoding, that its output would pass `max_length`."""


class _SnappyDecompressor:
    """Snappy in one call, with zlib's decompressobj interface: the framing format, or the block
    format when `framed` is False and the body does not start with a stream identifier (the
    OpenTelemetry Collector reads `snappy` both ways and `x-snappy-framed` framed only).

    Sizes are checked before anything is decoded: a block declares its length up front (its
    decoder would allocate it at once), and a frame's chunks hold at most 64 KiB each.
    """

    def __init__(self, framed: bool = False) -> None:
        self.framed = framed
        self.eof = False
        self.unused_data = b""

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes:
        """The whole body decoded; `_OverLimit` when it would be `max_length` bytes or more."""
        if self.framed or data.startswith(_SNAPPY_STREAM):
            out = _snappy_frames(data, max_length)
        else:
            if cramjam.snappy.decompress_raw_len(data) >= max_length:
                raise _OverLimit
            out = bytes(cramjam.snappy.decompress_raw(data))
        self.eof = True
        return out


def _snappy_frames(data: bytes, max_length: int) -> bytes:
    """Snappy's framing format: chunks of checksummed (compressed or literal) data, decoded one at a
    time by cramjam, which checks each CRC-32C."""
    if not data.startswith(_SNAPPY_STREAM):
        raise ValueError("a snappy frame must start with the stream identifier")
    out: list[bytes] = []
    size = 0
    position = 0
    while position < len(data):
        if len(data) - position < 4:
            raise ValueError("truncated chunk header")
        kind = data[position]
        end = position + 4 + int.from_bytes(data[position + 1:position + 4], "little")
        if end > len(data):
            raise ValueError("truncated chunk")
        if kind in (0x00, 0x01):  # compressed or literal data, after a 4-byte checksum
            body = data[position + 8:end]
            declared = cramjam.snappy.decompress_raw_len(body) if kind == 0x00 else len(body)
            if declared > _SNAPPY_CHUNK_MAX:
                raise ValueError(f"a chunk declares {declared} bytes (at most {_SNAPPY_CHUNK_MAX})")
            size += declared
            if size >= max_length:
                raise _OverLimit
            out.append(bytes(cramjam.snappy.decompress(_SNAPPY_STREAM + data[position:end])))
        elif kind == 0xFF:
            if data[position:end] != _SNAPPY_STREAM:
                raise ValueError("bad stream identifier")
        elif kind < 0x80:
            raise ValueError(f"reserved unskippable chunk type {kind:#04x}")
        position = end  # 0x80-0xfe: skippable chunks (padding among them)
    return b"".join(out)


# The Content-Encodings the OpenTelemetry Collector's OTLP/HTTP receiver accepts.
_DECOMPRESSORS: dict[str, Callable[[], _Decompressor]] = {
    "gzip": _gzip_decompressor,
    "x-gzip": _gzip_decompressor,
    "deflate": _zlib_decompressor,  # HTTP's "deflate" is the zlib format
    "zlib": _zlib_decompressor,
    "zstd": _zstd_decompressor,
    "lz4": lz4.frame.LZ4FrameDecompressor,  # the frame format, as the Collector sends it
    "snappy": _SnappyDecompressor,
    "x-snappy-framed": lambda: _SnappyDecompressor(framed=True),
}
# lz4 reports a corrupt frame as RuntimeError
_CORRUPT = (zlib.error, zstd.ZstdError, cramjam.DecompressionError, RuntimeError, ValueError)


def decompress(body: bytes, content_encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding (identity, gzip, deflate/zlib, zstd, lz4, snappy), at most
    `limit` bytes."""
    name = content_encoding.strip().lower()
    if name in ("", "identity"):
        return body
    decompressor = _DECOMPRESSORS.get(name)
    if decompressor is None:
        supported = "gzip, deflate, zlib, zstd, lz4, snappy, x-snappy-framed or none"
        raise InvalidPayload(f"unsupported Content-Encoding {name!r}: use {supported}")
    return _inflate(body, decompressor, limit, name)


def _inflate(data: bytes, decompressor: Callable[[], _Decompressor], limit: int, name: str) -> bytes:
    # Decompress member by member (gzip members, zstd and lz4 frames may follow one another; snappy
    # takes the whole body at once) and never past the limit: a small compressed body must not
    # expand into unbounded memory.
    out: list[bytes] = []
    size = 0
    while data:
        inflater = decompressor()
        try:
            chunk = inflater.decompress(data, limit - size + 1)
        except _OverLimit:
            raise _too_large(limit) from None
        except _CORRUPT as exc:
            raise InvalidPayload(f"invalid {name} body: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if not inflater.eof:
            raise InvalidPayload(f"invalid {name} body: truncated stream")
        out.append(chunk)
        data = inflater.unused_data
    return b"".join(out)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")


def decode_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Parse an ExportTraceServiceRequest, or raise InvalidPayload saying why not."""
    if encoding is Encoding.PROTOBUF:
        return decode_protobuf(body)
    return decode_json(body)


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse OTLP protobuf bytes."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise InvalidPayload(f"cannot decode OTLP protobuf: {exc}") from None
    return request


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse OTLP/JSON bytes (hex ids, enums as names or ints, unknown fields ignored)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidPayload("invalid OTLP/JSON: the body must be a JSON object")
    _hex_ids_to_base64(document)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, TypeError, ValueError) as exc:
        raise InvalidPayload(f"invalid OTLP/JSON: {exc}") from None
    return request


def _items(container: Any, *names: str) -> list[Any]:
    if not isinstance(container, dict):
        return []
    for name in names:
        value = container.get(name)
        if isinstance(value, list):
            return value
    return []


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _convert_ids(span)
                for link in _items(span, "links"):
                    _convert_ids(link)


def _convert_ids(obj: Any) -> None:
    if not isinstance(obj, dict):
        return
    for name in _ID_FIELDS:
        value = obj.get(name)
        if value is None:
            continue
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""  # rejected later as an invalid id
        obj[name] = base64.b64encode(raw).decode("ascii")


def encode_response(encoding: Encoding, rejected: int = 0, error_message: str = "") -> bytes:
    """An ExportTraceServiceResponse, with partial_success only when something was rejected."""
    response = ExportTraceServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error_message
    if encoding is Encoding.JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def encode_status(encoding: Encoding, code: int, message: str) -> bytes:
    """A google.rpc.Status error body, as OTLP/HTTP answers failed requests."""
    status = status_pb2.Status(code=code, message=message)
    if encoding is Encoding.JSON:
        return json_format.MessageToJson(status, indent=None).encode()
    return status.SerializeToString()

