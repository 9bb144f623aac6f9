"""Allowed paths: a change may never touch .git, the board or the roadmap, nor leave its allowed globs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from conveyor.checks.paths import check_paths, normalize, render_violations

BOARD = "work/collaboration/"
ROADMAPS = ("ROADMAP.md", "roadmap/ROADMAP.md")


def refused(changed: Sequence[str], globs: Sequence[str] | None = None, root: Path | None = None) -> list[str]:
    violations = check_paths(changed, board_dir=BOARD, roadmap_files=ROADMAPS, allowed_globs=globs, root=root)
    return [violation.path for violation in violations]


def test_ordinary_paths_are_allowed_without_globs() -> None:
    assert refused(["src/app.py", "tests/test_app.py", "README.md", "docs/ROADMAP.md", ".gitignore",
                    ".github/workflows/ci.yml", "work/collaboration-notes.md", "src/../setup.py"]) == []


@pytest.mark.parametrize("path", [
    ".git/config", ".git/hooks/pre-commit", "vendor/lib/.git/HEAD", ".GIT/config", ".Git/hooks/x",
    ".git./config", ".git /config", "git~1/config", "src/../.git/index",
])
def test_git_directory_is_refused(path: str) -> None:
    assert refused([path]) == [path]


@pytest.mark.parametrize("path", [
    "work/collaboration/inbox/task.yaml", "work/collaboration/done/x.yaml", "work/collaboration",
    "Work/Collaboration/inbox/t.yaml", "./work/collaboration/AGENT_STATUS.md",
    "src/../work/collaboration/assigned/t.yaml", "work\\collaboration\\inbox\\t.yaml",
    "work//collaboration/inbox/t.yaml",
])
def test_board_is_refused(path: str) -> None:
    assert refused([path]) == [path]


@pytest.mark.parametrize("path", ["ROADMAP.md", "roadmap.md", "./ROADMAP.md", "docs/../ROADMAP.md",
                                  "roadmap/ROADMAP.md"])
def test_roadmap_files_are_refused(path: str) -> None:
    assert refused([path]) == [path]


@pytest.mark.parametrize("path", ["../outside.txt", "src/../../escape.py", "/etc/passwd", "C:/Windows/x",
                                  "c:\\x", "", ".", "..", "src/.."])
def test_paths_outside_the_repository_are_refused(path: str) -> None:
    assert refused([path]) == [path]


def test_results_keep_input_order_once_each() -> None:
    changed = ["ROADMAP.md", "src/a.py", ".git/config", "ROADMAP.md", "work/collaboration/x"]
    assert refused(changed) == ["ROADMAP.md", ".git/config", "work/collaboration/x"]


@pytest.mark.parametrize(("path", "allowed"), [
    ("src/app.py", True), ("src/pkg/deep/mod.py", True), ("src", True),
    ("tests/test_a.py", True), ("tests/unit/test_b.py", False),
    ("CHANGELOG.md", True), ("docs/guide/intro.md", True),
    ("assets/logo.png", True), ("assets/sub/icon.svg", True),
    ("lib/a1.c", True), ("lib/ab.c", False), ("lib/a12.c", False),
    ("setup.py", False), ("srcx/app.py", False), ("other/src/app.py", False),
])
def test_allowed_globs(path: str, allowed: bool) -> None:
    globs = ["src/**", "tests/*.py", "*.md", "assets/", "./lib/a[0-9].c"]
    assert refused([path], globs) == ([] if allowed else [path])


def test_double_star_in_the_middle_spans_any_depth() -> None:
    globs = ["pkg/**/test_*.py"]
    assert refused(["pkg/test_a.py", "pkg/x/y/test_b.py"], globs) == []
    assert refused(["pkg/x/conftest.py"], globs) == ["pkg/x/conftest.py"]


def test_negated_character_class() -> None:
    assert refused(["v1.txt", "vx.txt"], ["v[!0-9].txt"]) == ["v1.txt"]


def test_an_empty_glob_list_allows_nothing_while_none_allows_everything() -> None:
    assert refused(["src/a.py"], []) == ["src/a.py"]
    assert refused(["src/a.py"], None) == []


def test_globs_never_override_the_protected_paths() -> None:
    assert refused([".git/config", "ROADMAP.md", "work/collaboration/t.yaml"], ["**"]) == [
        ".git/config", "ROADMAP.md", "work/collaboration/t.yaml"]


def test_reasons_and_rendering() -> None:
    violations = check_paths([".git/config", "work/collaboration/inbox/t.yaml", "ROADMAP.md", "../x", "lib/a"],
                             board_dir=BOARD, roadmap_files=ROADMAPS, allowed_globs=["src/**"])
    reasons = {v.path: v.reason for v in violations}
    assert "inside the .git directory" in reasons[".git/config"]
    assert "task board (work/collaboration/)" in reasons["work/collaboration/inbox/t.yaml"]
    assert "roadmap file" in reasons["ROADMAP.md"]
    assert "not a path inside the repository" in reasons["../x"]
    assert "outside the paths this task may change" in reasons["lib/a"]
    text = render_violations(violations)
    assert "nothing was committed" in text
    assert "  lib/a: is outside the paths this task may change" in text
    assert render_violations([]) == ""


def test_a_board_dir_outside_the_repository_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="board_dir"):
        check_paths(["a"], board_dir="/abs/board", roadmap_files=(), allowed_globs=None)


def test_normalize() -> None:
    assert normalize("./a//b/../c") == "a/c"
    assert normalize("a\\b") == "a/b"
    assert normalize("../a") is None
    assert normalize("/a") is None


# -- symbolic links (with the worktree root given) ---------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "wt"
    for folder in (".git/hooks", "work/collaboration/inbox", "src", "docs"):
        (root / folder).mkdir(parents=True)
    (root / "ROADMAP.md").write_text("# roadmap\n")
    (root / "src/real.py").write_text("x = 1\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("elsewhere\n")
    os.symlink("../work/collaboration", root / "docs/board")
    os.symlink(".git/hooks", root / "hooks")
    os.symlink("../ROADMAP.md", root / "docs/plan.md")
    os.symlink(str(outside), root / "docs/outside.txt")
    os.symlink("..", root / "docs/up")
    os.symlink("real.py", root / "src/alias.py")
    return root


def test_links_into_protected_places_are_refused(tree: Path) -> None:
    changed = ["docs/board/inbox/t.yaml", "hooks", "hooks/pre-commit", "docs/plan.md", "docs/outside.txt",
               "docs/up", "src/alias.py", "src/real.py"]
    violations = {v.path: v.reason for v in check_paths(
        changed, board_dir=BOARD, roadmap_files=ROADMAPS, allowed_globs=None, root=tree)}

    assert set(violations) == {"docs/board/inbox/t.yaml", "hooks", "hooks/pre-commit", "docs/plan.md",
                               "docs/outside.txt", "docs/up"}
    assert "symbolic link" in violations["docs/board/inbox/t.yaml"]
    assert "task board" in violations["docs/board/inbox/t.yaml"]
    assert ".git" in violations["hooks/pre-commit"]
    assert "roadmap" in violations["docs/plan.md"]
    assert "outside the repository" in violations["docs/outside.txt"]
    assert "repository root" in violations["docs/up"]


def test_without_root_links_cannot_be_seen(tree: Path) -> None:
    assert refused(["docs/board/inbox/t.yaml"]) == []
    assert refused(["docs/board/inbox/t.yaml"], root=tree) == ["docs/board/inbox/t.yaml"]


def test_a_deleted_file_under_a_real_directory_is_judged_by_its_path(tree: Path) -> None:
    assert refused(["src/deleted.py"], root=tree) == []
