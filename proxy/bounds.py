"""Range checks for plain config dataclasses, read from their `annotated_types` bounds.

The same `Annotated[int, Ge(1)]` bounds are enforced by pydantic when a config file is validated
(with its usual messages) and by `check_bounds` in `__post_init__` when code builds the dataclass
directly, e.g. the sidecar's data plane, which does not import pydantic (it costs ~9 MB of RSS).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import typing
from typing import Any

import annotated_types

_CHECKS = {
    annotated_types.Ge: (operator.ge, "ge", ">="), annotated_types.Gt: (operator.gt, "gt", ">"),
    annotated_types.Le: (operator.le, "le", "<="), annotated_types.Lt: (operator.lt, "lt", "<"),
}


@functools.cache
def _bounds(cls: type) -> tuple[tuple[str, Any, Any, str], ...]:
    """(field, compare, limit, symbol) for every bound on `cls`'s fields."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for field in dataclasses.fields(cls):
        for meta in getattr(hints[field.name], "__metadata__", ()):
            if (check := _CHECKS.get(type(meta))) is not None:
                compare, attribute, symbol = check
                found.append((field.name, compare, getattr(meta, attribute), symbol))
    return tuple(found)


def check_bounds(instance: Any) -> None:
    """Raise ValueError naming the first field outside its `annotated_types` bounds."""
    cls: type = type(instance)
    for name, compare, limit, symbol in _bounds(cls):
        value = getattr(instance, name)
        if not compare(value, limit):
            raise ValueError(f"{name} must be {symbol} {limit} (got {value!r})")
