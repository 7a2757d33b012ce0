"""The named queries of service/store/sql: every one the store runs exists, none is dead, and
each .sql file is named after the store module that runs its queries."""

from __future__ import annotations

import ast
import re
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


def _module_nodes(path: Path) -> list[ast.AST]:
    return list(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def _run_with_a_constant_name(nodes: list[ast.AST]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if called in RUNNERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def test_each_sql_file_is_named_after_the_store_module_that_runs_it() -> None:
    # sql/<stem>.sql holds the queries of service/store/<stem>.py and only those: every query
    # in it is named in that module, and no other store module runs one of them by name.
    store_dir = Path(service.store.__file__).parent
    nodes = {path.stem: _module_nodes(path) for path in store_dir.glob("*.py")}
    run_by = {stem: _run_with_a_constant_name(found) for stem, found in nodes.items()}
    misplaced: list[str] = []
    for sql in sorted((store_dir / "sql").glob("*.sql")):
        if sql.stem not in nodes:
            misplaced.append(f"{sql.name}: there is no service/store/{sql.stem}.py")
            continue
        in_file = set(re.findall(r"^--\s*name:\s*(\w+)\s*$", sql.read_text("utf-8"), re.M))
        named = {
            n.value
            for n in nodes[sql.stem]
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        misplaced += [f"{q} ({sql.name}) is not named in {sql.stem}.py" for q in in_file - named]
        for stem, run in run_by.items():
            if stem != sql.stem:
                misplaced += [f"{q} ({sql.name}) is run by {stem}.py" for q in run & in_file]
    assert sorted(misplaced) == []
