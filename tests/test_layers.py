"""The layers as a process sees them: importing the producer side loads nothing of the engine;
the tests' own layering: no test module imports another; and no more than a couple of long
functions in service/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("shapely", "numpy", "tzfpy", "service.rules.engine", "service.rules.loader")


# service.cli: the parser tree of every command; `momentcast --version`, `vapid` or `serve`
# must not pay for the engine (rules commands import it when they run).
@pytest.mark.parametrize("module", ["service.ingest", "service.api", "service.cli"])
def test_importing_the_producer_side_loads_no_engine(module: str) -> None:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == [], f"importing {module} loaded {out.stdout.strip()}"


TESTS = Path(__file__).resolve().parent


def _test_module_imports(path: Path) -> list[str]:
    """The ``test_*`` modules of the tests package that ``path`` imports, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from tests.web import test_browser`` names the module in the alias.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{'.' * node.level}{node.module or ''}"]
            names += [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            last = name.rsplit(".", 1)[-1]
            if last.startswith("test_") and (name.startswith("tests.") or name.startswith(".")):
                found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno}: imports {name}")
    return found


def test_no_test_module_imports_another() -> None:
    # Shared helpers live in tests/factories.py, the conftests and helper modules (rulekit,
    # logscan, browserkit...): a test module imported by another runs its module-level
    # fixtures and pytestmark in the importer and ties the two files' edits together.
    found = [hit for path in sorted(TESTS.rglob("*.py")) for hit in _test_module_imports(path)]
    assert found == [], "\n".join(found)


SERVICE = TESTS.parent / "service"
LONG_FUNCTION_LINES = 80
MAX_LONG_FUNCTIONS = 2


def _long_functions(root: Path) -> list[str]:
    """Every function (or method) under ``root`` longer than LONG_FUNCTION_LINES lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LONG_FUNCTION_LINES:
                    where = f"{path.relative_to(root.parent)}:{node.lineno}"
                    found.append(f"{where}: {node.name} ({lines} lines)")
    return found


def test_at_most_two_service_functions_run_over_80_lines() -> None:
    # Issue 21: a long function hides its steps; split it into named ones instead of
    # raising the bound. Decorators are not counted, the docstring and comments are.
    found = _long_functions(SERVICE)
    assert len(found) <= MAX_LONG_FUNCTIONS, (
        f"{len(found)} functions in service/ run over {LONG_FUNCTION_LINES} lines "
        f"(at most {MAX_LONG_FUNCTIONS}):\n" + "\n".join(found)
    )
