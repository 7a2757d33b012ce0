"""The named queries of service/store/sql: every one the store runs exists, and none is dead."""

from __future__ import annotations

import ast
from pathlib import Path

import service.store
from service.store.db import queries

RUNNERS = {"_fetch", "_fetchrow", "_fetchval", "_execute", "q"}


def _store_nodes() -> list[ast.AST]:
    return [
        node
        for path in Path(service.store.__file__).parent.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
    ]


def _names_run_by_the_store() -> set[str]:
    names: set[str] = set()
    for node in _store_nodes():
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if called in RUNNERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def test_every_query_the_store_runs_is_defined() -> None:
    assert _names_run_by_the_store() - set(queries()) == set()


def test_every_defined_query_is_run() -> None:
    # Some names are run from a loop over a tuple of names: any string naming it counts.
    strings = {
        n.value for n in _store_nodes() if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert set(queries()) - strings == set()
