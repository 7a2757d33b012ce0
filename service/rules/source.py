"""Line-aware loading of YAML (and JSON, which YAML parses too).

Marketers fix what the message points at, so every value keeps the line it
came from: the loader returns plain Python data plus a map from the value's
path (tuple of keys and list indexes) to its 1-based line number.

Rule files are untrusted text (anyone who can edit rules/ or reach the reload endpoint
can hand one in), so parsing must end in data or a SourceError, in time and memory
linear in the text: anchors and aliases are refused while composing, before any node is
shared (nested aliases in a few hundred bytes expand to millions of values, and a
recursive one to an endless structure), and so are merge keys, tags other than YAML's
plain scalar types, and nesting deeper than MAX_DEPTH (the composer recurses per level).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from service.errors import SourceError

Path = tuple[str | int, ...]

# The largest rule or policy file read at all; a real one is a few kilobytes.
MAX_SOURCE_BYTES: Final = 1 << 20
# Rule files nest five or six levels (message.locales.de.actions[0].title).
MAX_DEPTH: Final = 64
_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS: Final = frozenset(
    {"!", *(_YAML + t for t in ("str", "int", "float", "bool", "null"))}
)
_COLLECTION_TAGS: Final = frozenset({_YAML + "map", _YAML + "seq"})
MERGE_TAG: Final = _YAML + "merge"


# libyaml's parser is about ten times as fast as PyYAML's: a 1 MiB file takes seconds, not
# half a minute. Its own composer cannot be overridden (and recurses on the C stack), so
# nodes are composed by PyYAML's Composer below, from libyaml's events.
_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_Parser, Composer):  # type: ignore[misc]
    """Refuses, at the line of the event, what a rule file never needs."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        self._depth = 0

    def single_node(self) -> Node | None:
        # Composer's, not the C parser's get_single_node, so that compose_node is ours.
        node: Node | None = Composer.get_single_node(self)
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise SourceError(
                line, f"YAML aliases (*{event.anchor}) are not allowed; write the value out"
            )
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise SourceError(
                line, f"YAML anchors (&{event.anchor}) are not allowed; write the value out"
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            allowed = _SCALAR_TAGS if isinstance(event, ScalarEvent) else _COLLECTION_TAGS
            if tag not in allowed:
                raise SourceError(line, f"YAML tags ({_short(tag)}) are not allowed")
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise SourceError(line, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag


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
                if key_node.tag == MERGE_TAG:
                    raise SourceError(
                        key_node.start_mark.line + 1,
                        "YAML merge keys (<<) are not allowed; write the keys out",
                    )
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
            try:
                return self._scalars.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError:
                raise
            except (ValueError, OverflowError) as exc:  # 2026-13-45; an int of 5000 digits
                shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
                raise SourceError(node.start_mark.line + 1, f"bad value {shown!r}: {exc}") from None
        raise SourceError(node.start_mark.line + 1, "unsupported YAML node")


def load_located(text: str) -> Located:
    """Parse one YAML/JSON document, keeping lines; raises SourceError and nothing else."""
    if len(text) > MAX_SOURCE_BYTES:  # characters: at least as many bytes
        raise SourceError(1, f"more than {MAX_SOURCE_BYTES} characters (1 MiB)")
    try:
        return _load_located(text)
    except SourceError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or str(exc)
        raise SourceError(line, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(1, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise SourceError(1, "nested too deeply") from None
    except Exception as exc:  # whatever the text, the caller gets file:line, not a crash
        raise SourceError(1, f"cannot be parsed ({type(exc).__name__}: {exc})") from None


def _load_located(text: str) -> Located:
    loader = _StrictLoader(text)
    try:
        node = loader.single_node()
    finally:
        loader.dispose()
    if node is None:
        return Located(data=None, lines={(): 1})
    builder = _Builder()
    try:
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise SourceError(mark.line + 1 if mark else 1, f"bad value: {exc.problem}") from None
    return Located(data=data, lines=builder.lines, duplicates=builder.duplicates)
