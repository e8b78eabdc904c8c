"""A minimal writer of ClickHouse's Native format: one block of typed, column-major data.

Building the bytes ourselves (fixed-width columns straight from `array` buffers, strings through
clickhouse-connect's C string writer) avoids per-value Python work in the generic insert path;
the server converts String to LowCardinality(String) on insert.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from clickhouse_connect.driver.ctypes import data_conv

from gatewatch.wire import varint  # unsigned LEB128: Native counts and string lengths


def write_strings(values: Sequence[str], dest: bytearray) -> None:
    """A String column: each value as varint length + UTF-8 bytes."""
    if data_conv.write_str_col(values, False, "utf-8", dest):
        raise ValueError("a string column holds a value that is not str")


def write_fixed(values: array[int], dest: bytearray) -> None:
    """A fixed-width column (Int64, UInt64, DateTime64) from a little-endian array buffer."""
    dest += values.tobytes()


class NativeBlock:
    """One Native block: call `column()` once per column, in order, then `payload()`."""

    def __init__(self, columns: int, rows: int) -> None:
        self._buffer = bytearray(varint(columns) + varint(rows))

    def column(self, name: str, type_name: str) -> bytearray:
        """Start a column; returns the buffer its data must be written to."""
        for text in (name, type_name):
            encoded = text.encode()
            self._buffer += varint(len(encoded))
            self._buffer += encoded
        return self._buffer

    def payload(self) -> bytes:
        """The finished block."""
        return bytes(self._buffer)
