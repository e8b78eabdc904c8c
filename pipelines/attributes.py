"""OTLP attribute values as strings, the way the Collector's pdata `Value.AsString` writes them.

Strings pass through; bools are `true`/`false`; ints are decimal; doubles use Go's shortest
non-exponent form (`strconv.FormatFloat(v, 'f', -1, 64)`); bytes are standard base64; arrays and
maps are Go-style JSON (sorted keys, HTML-safe escapes); an empty value is the empty string.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def format_double(value: float) -> str:
    """Go's FormatFloat(value, 'f', -1, 64): shortest round-trip digits, never an exponent."""
    text = repr(value)
    if "e" not in text and "n" not in text:  # plain digits (not 1e+20, nan, inf): the common case
        return text[:-2] if text.endswith(".0") else text
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def as_string(value: Any) -> str:
    """One `AnyValue` message as the exporter's attribute string."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return format_double(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind in ("array_value", "kvlist_value"):
        return _go_json(_raw(value))
    return ""


def _raw(value: Any) -> Any:
    """A value as plain Python data, as pdata's AsRaw gives it to encoding/json."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_raw(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "double_value":
        number = value.double_value
        # encoding/json writes integral floats without a fraction and cannot encode NaN/Inf.
        if math.isfinite(number) and number == int(number) and abs(number) < 1e21:
            return int(number)
        return number if math.isfinite(number) else None
    if kind is None:
        return None
    return getattr(value, kind)


def _go_json(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    for char, escape in _JSON_ESCAPES.items():
        if char in text:
            text = text.replace(char, escape)
    return text


def append_attributes(attributes: Iterable[Any], keys: list[str], values: list[str]) -> None:
    """Append OTLP KeyValues to flat key/value lists (string values take the fast path)."""
    for kv in attributes:
        value = kv.value
        text = value.string_value
        keys.append(kv.key)
        # An empty string_value may also mean another type is set: only then ask which.
        values.append(text if text else as_string(value))
