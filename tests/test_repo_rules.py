"""Rules of the test suite itself: no test module imports another (shared code lives in tests/helpers.py,
tests/run_helpers.py, tests/fake_engines.py and fixtures in tests/conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imports_of_test_modules(path: Path) -> list[str]:
    """``file:line imports name`` for each import of a ``test_*`` module in the Python file ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):  # from . import test_x / from .test_x import y
            names = [node.module or "", *(alias.name for alias in node.names)]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0].startswith("test_")]
    return [f"{path.name}:{line} imports {name}" for line, name in sorted(found)]


def test_no_test_module_imports_another():
    offences = [line for path in sorted(TESTS.glob("test_*.py")) for line in imports_of_test_modules(path)]
    assert offences == [], "move what test modules share into tests/helpers.py or conftest.py:\n" + "\n".join(offences)


def test_the_rule_names_the_file_and_line_of_each_offending_import(tmp_path):
    source = "import os\nfrom helpers import free_port\n\ndef f():\n    from test_engine_train import run\n"
    source += "import test_cli, json\nfrom . import test_plan\nfrom .conftest import demo\n"
    (tmp_path / "test_crafted.py").write_text(source)
    assert imports_of_test_modules(tmp_path / "test_crafted.py") == [
        "test_crafted.py:5 imports test_engine_train",
        "test_crafted.py:6 imports test_cli",
        "test_crafted.py:7 imports test_plan",
    ]
