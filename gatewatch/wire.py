"""Protobuf/LEB128 wire helpers shared by the OTLP encoders (proxies, collector) and ClickHouse
Native blocks (pipeline): dependency-free, so a sidecar can use them without protobuf."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """Base-128 varint (unsigned LEB128) of a non-negative int: protobuf lengths and tags, Native counts."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
