"""The package layout stays the architecture: layering by import-linter, small classes, no test tools shipped."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "daemon" / "conveyor"
MAX_CLASS_LINES = 300


def test_the_layering_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_top_level_holds_only_packages() -> None:
    modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(modules) <= 6, modules


def test_no_class_is_over_300_lines() -> None:
    big = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (node.end_lineno or 0) - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert big == []


def test_product_code_never_imports_test_tools() -> None:
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if "tests.support" in path.read_text(encoding="utf-8")]
    assert offenders == []


def test_every_package_says_what_it_owns_and_may_import() -> None:
    silent = [str(init.parent.relative_to(PACKAGE)) for init in PACKAGE.glob("*/__init__.py")
              if "May import" not in (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "")]
    assert silent == []


def test_no_test_reads_outside_the_repository() -> None:
    """A clone with nothing beside it runs every test: fixtures live in tests/fixtures/."""
    needle = '"shared"'
    readers = [str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "tests").rglob("*.py")
               if needle in path.read_text(encoding="utf-8") and path.name != Path(__file__).name]
    assert readers == []
    assert (REPO_ROOT / "tests" / "fixtures" / "seed-board" / "README.md").is_file()
