"""Load a YAML file into a pydantic model with errors that name the file, line and field."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gatewatch.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[int | str, ...]
# Cross-field checks after validation: (location, message) pairs, reported at the location's line.
Check = Callable[[Any], Sequence[tuple[Loc, str]]]


def _node_at(node: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location (keys of mappings, indexes of lists)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == part), None)
            if child is None:
                return node
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _located(path: Path, root: yaml.Node | None, loc: Loc, message: str) -> ConfigError:
    node = _node_at(root, loc)
    line = node.start_mark.line + 1 if node is not None else 1
    field = ".".join(str(part) for part in loc) or "(top level)"
    return ConfigError(f"{path}:{line}: {field}: {message}")


def load_yaml_model(
    model: type[M], path: Path, text: str | None = None, check: Check | None = None,
    prepare: Callable[[Any], Any] | None = None,
) -> M:
    """Parse and validate `path` (after `prepare(data)`, e.g. flag overrides); raises
    ConfigError("file:line: field: message")."""
    try:
        source = text if text is not None else path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    data = data if data is not None else {}
    if prepare is not None:
        data = prepare(data)
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
        raise _located(path, root, tuple(error["loc"]), f"{error['msg']}{more}") from None
    problems = check(value) if check is not None else ()
    if problems:
        loc, message = problems[0]
        raise _located(path, root, loc, message)
    return value
