"""Message templates: `{field}` placeholders from a fixed set, `{{`/`}}` for
literal braces.

Fields:
  {place.<property>}   any property of the place feature (id, name, category, ...)
                       - every place the rule can fire for must have it
  {distance_m}         whole metres from the subscriber to the place
  {rule.id}            the rule's id
  {attributes.<name>}  a subscriber attribute; empty when the subscriber has
                       none, cut to ATTRIBUTE_MAX_CHARS characters
  {context.<name>}     a value of the signal's context; empty when absent, cut to
                       ATTRIBUTE_MAX_CHARS characters
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.errors import TemplateError

ATTRIBUTE_MAX_CHARS = 64
# Worst case per character in JSON: a control character becomes \u00XX.
_WORST_BYTES_PER_CHAR = 6
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | tuple[str, str], ...]  # literal text, or (root, name)

    @property
    def fields(self) -> list[tuple[str, str]]:
        return [p for p in self.parts if isinstance(p, tuple)]

    def render(self, values: Mapping[tuple[str, str], str]) -> str:
        return "".join([p if isinstance(p, str) else values.get(p, "") for p in self.parts])


def parse_template(text: str) -> Template:
    parts: list[str | tuple[str, str]] = []
    pos = 0
    for m in _FIELD.finditer(text):
        parts.append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
            continue
        if token in ("{", "}"):
            raise TemplateError(
                f"unmatched {token!r} in {text!r}; write {token * 2} for a literal brace"
            )
        name = (m.group(1) or "").strip()
        parts.append(_field(name))
    parts.append(text[pos:])
    return Template(source=text, parts=tuple(p for p in parts if p != ""))


def _field(name: str) -> tuple[str, str]:
    if name in ("distance_m", "rule.id"):
        return ("distance_m", "") if name == "distance_m" else ("rule", "id")
    root, dot, rest = name.partition(".")
    if dot and root in ("place", "attributes", "context") and _NAME.match(rest):
        return (root, rest)
    raise TemplateError(
        f"unknown template field {{{name}}}; use {{place.<property>}}, "
        "{distance_m}, {rule.id}, {attributes.<name>} or {context.<name>}"
    )


def text_value(value: Any) -> str:
    """How a property or attribute value reads in a message."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def attribute_value(value: Any) -> str:
    return text_value(value)[:ATTRIBUTE_MAX_CHARS]


def json_bytes(text: str) -> int:
    """Bytes `text` takes inside a JSON string (UTF-8, escapes counted)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def worst_case_bytes(
    template: Template, place_fields: Mapping[str, int], distance_digits: int, rule_id: str
) -> int:
    """Largest JSON-escaped size the template can render to.

    `place_fields` gives, per property, the longest escaped value over the
    rule's places. Attributes and context values are unknown until send time, so
    they count at their cap with the worst escaping."""
    total = 0
    for part in template.parts:
        if isinstance(part, str):
            total += json_bytes(part)
        elif part[0] == "place":
            total += place_fields.get(part[1], 0)
        elif part[0] == "distance_m":
            total += distance_digits
        elif part[0] == "rule":
            total += json_bytes(rule_id)
        else:
            total += ATTRIBUTE_MAX_CHARS * _WORST_BYTES_PER_CHAR
    return total


def longest_place_values(
    names: Iterable[str], places: Iterable[Mapping[str, Any]]
) -> dict[str, int]:
    wanted = set(names)
    out: dict[str, int] = dict.fromkeys(wanted, 0)
    for props in places:
        for name in wanted:
            if name in props:
                out[name] = max(out[name], json_bytes(text_value(props[name])))
    return out
