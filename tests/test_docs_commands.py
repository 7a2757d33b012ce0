"""Every `momentcast ...` command in the README and docs/ names a command and options the
command line has: a renamed flag or subcommand fails here, not in a reader's terminal."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest

from service import cli
from service.cli import campaigns as campaign_cli
from service.cli import rules as rules_cli
from tests.processes import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`(momentcast [^`]+)`")
# In a shell line the command ends at a comment, a substitution's end, a pipe or a redirect.
_IN_SHELL = re.compile(r"(?:^|[\s(])(momentcast\s[^)|;&>\"$]*)")


def _commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        name = doc.relative_to(REPO).as_posix()
        for block in _FENCE.finditer(text):
            for full_line in block.group(1).splitlines():
                line = re.sub(r"(^|\s)#.*", "", full_line)  # a shell comment
                found += [(name, m.group(1).strip()) for m in _IN_SHELL.finditer(line)]
        outside = _FENCE.sub("", text)
        found += [(name, m.group(1).replace("\\|", "|")) for m in _INLINE.finditer(outside)]
    return found


def _words(command: str) -> list[str]:
    # `[--since 24h]` is an optional part: check it as if given; `a|b` names alternatives.
    return command.replace("[", " ").replace("]", " ").split()[1:]


def _is_command(words: list[str]) -> bool:
    # Log lines quoted in the docs (`momentcast VERSION started: ...`) are not commands.
    return bool(words) and re.fullmatch(r"--?[a-z-]+|[a-z][a-z-]*", words[0]) is not None


def _help(path: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """`momentcast PATH --help`, in this process: what the parser of that command accepts."""
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli.main([*path, "--help"])
    assert exit_.value.code == 0, (path, out.getvalue())
    return out.getvalue()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _tree() -> dict[str, set[str]]:
    """Each command, and the subcommands of the commands that hand over to their own parser."""
    top = _subcommands(cli._parser())
    tree = {name: set(_subcommands(parser)) for name, parser in top.items()}
    tree["rules"] = set(_subcommands(rules_cli._parser()))
    tree["campaign"] = set(_subcommands(campaign_cli._parser()))
    return tree


def test_the_docs_have_commands_to_check() -> None:
    commands = {c for _, c in _commands()}
    assert any(c.startswith("momentcast rules check") for c in commands), commands
    assert any(c.startswith("momentcast campaign send") for c in commands), commands


def test_every_documented_command_and_option_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = _tree()
    helps: dict[tuple[str, ...], str] = {}
    wrong: list[str] = []
    for doc, command in _commands():
        words = _words(command)
        if not _is_command(words) or words[0].startswith("-"):
            if words and words[0].startswith("-") and words[0] not in ("--version", "--help"):
                wrong.append(f"{doc}: {command}: unknown option {words[0]}")
            continue
        for first in words[0].split("|"):
            if first not in tree:
                wrong.append(f"{doc}: {command}: no command {first!r}")
                continue
            paths = [[first]]
            rest = words[1:]
            if tree[first] and rest and not rest[0].startswith("-"):
                subs = rest[0].split("|")
                for sub in subs:
                    if sub not in tree[first]:
                        wrong.append(f"{doc}: {command}: no command {first!r} {sub!r}")
                paths = [[first, sub] for sub in subs if sub in tree[first]]
                rest = rest[1:]
            if first == "demo" and rest[:1] == ["--"]:  # demo's own options follow `--`
                rest = rest[1:]
            flags = [w.split("=")[0] for w in rest if w.startswith("--") and w != "--"]
            for path in paths:
                key = tuple(path)
                helps.setdefault(key, _help(path, monkeypatch, tmp_path))
                for flag in flags:
                    if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[key]):
                        wrong.append(f"{doc}: {command}: {' '.join(path)} has no {flag}")
    assert not wrong, "\n".join(wrong)
