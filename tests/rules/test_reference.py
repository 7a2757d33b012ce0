"""The executable specification (`service.rules.reference`) stays out of the hot path: it is
slow on purpose, so no module of the service may import it; only tests do."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import service

SPEC = "service.rules.reference"
ROOT = Path(service.__file__).parent


def package_of(path: Path) -> str:
    """The package a module file of the service is in (a package's ``__init__``: itself)."""
    name = ".".join(("service", *path.relative_to(ROOT).with_suffix("").parts))
    return name.removesuffix(".__init__") if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(source: str, package: str) -> set[str]:
    """The modules ``source`` (a module of ``package``) imports, relative imports resolved;
    ``from a import b`` gives both ``a`` and ``a.b`` (b may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_service_module_imports_the_reference() -> None:
    importers = [
        str(path.relative_to(ROOT.parent))
        for path in sorted(ROOT.rglob("*.py"))
        if path.name != "reference.py"
        and SPEC in imported_modules(path.read_text(), package_of(path))
    ]
    assert importers == []


@pytest.mark.parametrize(
    ("source", "package"),
    [
        ("from .reference import reference_decide\n", "service.rules"),
        ("from . import reference\n", "service.rules"),
        ("from ..rules.reference import EXPIRED\n", "service.worker"),
        ("from service.rules import reference\n", "service.api"),
        ("import service.rules.reference\n", "service"),
    ],
)
def test_the_check_sees_every_spelling(source: str, package: str) -> None:
    """The check above can fail: each way of importing the specification is seen."""
    assert SPEC in imported_modules(source, package)
