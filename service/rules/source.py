"""Line-aware loading of YAML (and JSON, which YAML parses too).

Marketers fix what the message points at, so every value keeps the line it
came from: the loader returns plain Python data plus a map from the value's
path (tuple of keys and list indexes) to its 1-based line number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from service.errors import SourceError

Path = tuple[str | int, ...]


@dataclass
class Located:
    """Parsed data plus the line of every value, and duplicate-key findings."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[int, str]] = field(default_factory=list)

    def line_of(self, path: Sequence[str | int]) -> int:
        """Line of the deepest known prefix of `path`, so errors about a
        missing key point at the mapping that should have held it."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)


class _Builder:
    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.duplicates: list[tuple[int, str]] = []
        # SafeConstructor gives YAML's scalar typing (ints, dates, bools)
        # without allowing arbitrary object construction.
        self._scalars = yaml.SafeLoader("")

    def build(self, node: Node, path: Path) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, (*path, "<key>"))
                if not isinstance(key, str | int | float | bool):
                    raise SourceError(key_node.start_mark.line + 1, "mapping keys must be plain")
                skey = key if isinstance(key, str) else str(key)
                if skey in out:
                    self.duplicates.append(
                        (key_node.start_mark.line + 1, f"duplicate key {skey!r}")
                    )
                out[skey] = self.build(value_node, (*path, skey))
                self.lines[(*path, skey)] = key_node.start_mark.line + 1
            self.lines.pop((*path, "<key>"), None)
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, ScalarNode):
            return self._scalars.construct_object(node, deep=True)
        raise SourceError(node.start_mark.line + 1, "unsupported YAML node")


def load_located(text: str) -> Located:
    """Parse one YAML/JSON document, keeping lines; raises SourceError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or str(exc)
        raise SourceError(line, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(1, f"not valid YAML: {exc}") from None
    if node is None:
        return Located(data=None, lines={(): 1})
    builder = _Builder()
    try:
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise SourceError(mark.line + 1 if mark else 1, f"bad value: {exc.problem}") from None
    return Located(data=data, lines=builder.lines, duplicates=builder.duplicates)
