"""git.stage_change: one `git diff` gives both the changed paths and the bytes the secret scan reads."""

from __future__ import annotations

from pathlib import Path

from conveyor.workspace import git as conveyor_git
from tests.conftest import git


def _seed(repo: Path) -> None:
    (repo / "keep.txt").write_text("unchanged\n")
    (repo / "gone.txt").write_text("to be deleted\n")
    (repo / "script.sh").write_text("#!/bin/sh\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "seed")


def test_paths_come_from_the_diff_headers_for_ordinary_and_awkward_names(git_repo: Path) -> None:
    _seed(git_repo)
    (git_repo / "new file with spaces.py").write_text("x = 1\n")
    (git_repo / "café" / "ünï.txt").parent.mkdir()
    (git_repo / "café" / "ünï.txt").write_text("bonjour\n")
    (git_repo / "empty.txt").write_text("")
    (git_repo / "gone.txt").unlink()
    (git_repo / "script.sh").chmod(0o755)
    (git_repo / "README.md").write_text("# changed\n")

    staged = conveyor_git.stage_change(git_repo)

    expected = sorted(["new file with spaces.py", "café/ünï.txt", "empty.txt", "gone.txt", "script.sh",
                       "README.md"])
    assert sorted(staged.paths) == expected
    names = git(git_repo, "diff", "--cached", "--name-only", "-z", "--no-renames")
    assert sorted(name for name in names.split("\0") if name) == expected   # git itself agrees
    assert b"+x = 1" in staged.diff and b"+bonjour" in staged.diff


def test_a_name_git_must_quote_falls_back_to_name_only(git_repo: Path) -> None:
    awkward = 'say "hi"\\now.txt'
    (git_repo / awkward).write_text("hello\n")
    (git_repo / "plain.txt").write_text("plain\n")

    staged = conveyor_git.stage_change(git_repo)

    assert sorted(staged.paths) == sorted([awkward, "plain.txt"])
    assert b"+hello" in staged.diff


def test_nothing_changed_gives_no_paths_and_an_empty_diff(git_repo: Path) -> None:
    staged = conveyor_git.stage_change(git_repo)
    assert staged.paths == [] and staged.diff == b""
    assert conveyor_git.stage_all(git_repo) == []
