"""Bounded memo tables for the request path: what a request's bytes decode to, or what a span's
values encode to, repeats across requests, so it is made once and looked up after that."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Memo(dict[Any, Any]):
    """`make(key)`, made on first use of `key` and kept. Bounded: emptied when full, so that keys a
    peer makes up (header names, paths) cannot grow it. Read it by subscript: `memo[key]`."""

    def __init__(self, make: Callable[[Any], Any], limit: int) -> None:
        super().__init__()
        self.make = make
        self.limit = limit

    def __missing__(self, key: Any) -> Any:
        value = self.make(key)
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
