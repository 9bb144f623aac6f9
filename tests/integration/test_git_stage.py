"""task_workspace.stage: one `git diff` from the base gives both the changed paths and the bytes the secret
scan reads, whatever the agent did to its own repository."""

from __future__ import annotations

from pathlib import Path

from conveyor.workspace import task_workspace
from conveyor.workspace.task_workspace import Workspace
from tests.conftest import git


def _workspace(repo: Path) -> Workspace:
    root = repo.parent
    return task_workspace.create(repo, repo / ".git", root / "workspaces" / "t", root / "state" / "t", "conveyor/t",
                                 "main")


def _seed(repo: Path) -> None:
    (repo / "keep.txt").write_text("unchanged\n")
    (repo / "gone.txt").write_text("to be deleted\n")
    (repo / "script.sh").write_text("#!/bin/sh\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "seed")


def test_paths_come_from_the_diff_headers_for_ordinary_and_awkward_names(git_repo: Path) -> None:
    _seed(git_repo)
    workspace = _workspace(git_repo)
    git_repo = workspace.path
    (git_repo / "new file with spaces.py").write_text("x = 1\n")
    (git_repo / "café" / "ünï.txt").parent.mkdir()
    (git_repo / "café" / "ünï.txt").write_text("bonjour\n")
    (git_repo / "empty.txt").write_text("")
    (git_repo / "gone.txt").unlink()
    (git_repo / "script.sh").chmod(0o755)
    (git_repo / "README.md").write_text("# changed\n")

    staged = task_workspace.stage(workspace)

    expected = sorted(["new file with spaces.py", "café/ünï.txt", "empty.txt", "gone.txt", "script.sh",
                       "README.md"])
    assert sorted(staged.paths) == expected
    git(git_repo, "add", "--all")     # the agent's own repository, staged by git itself, agrees
    names = git(git_repo, "diff", "--cached", "--name-only", "-z", "--no-renames")
    assert sorted(name for name in names.split("\0") if name) == expected   # git itself agrees
    assert b"+x = 1" in staged.diff and b"+bonjour" in staged.diff


def test_a_name_git_must_quote_falls_back_to_name_only(git_repo: Path) -> None:
    workspace = _workspace(git_repo)
    git_repo = workspace.path
    awkward = 'say "hi"\\now.txt'
    (git_repo / awkward).write_text("hello\n")
    (git_repo / "plain.txt").write_text("plain\n")

    staged = task_workspace.stage(workspace)

    assert sorted(staged.paths) == sorted([awkward, "plain.txt"])
    assert b"+hello" in staged.diff


def test_nothing_changed_gives_no_paths_and_an_empty_diff(git_repo: Path) -> None:
    workspace = _workspace(git_repo)
    staged = task_workspace.stage(workspace)
    assert staged.paths == [] and staged.diff == b""
    assert not task_workspace.has_changes(workspace)


def test_the_change_is_base_to_final_tree_whatever_the_agent_did_to_its_repository(git_repo: Path) -> None:
    _seed(git_repo)
    workspace = _workspace(git_repo)
    here = workspace.path
    ident = ("-c", "user.name=agent", "-c", "user.email=agent@localhost")
    (here / "committed.txt").write_text("committed by the agent\n")
    git(here, "add", "committed.txt")
    git(here, *ident, "commit", "-q", "-m", "agent commit")
    git(here, "checkout", "-q", "-b", "elsewhere")
    (here / "gone.txt").unlink()
    git(here, "add", "-A")
    git(here, *ident, "commit", "-q", "-m", "agent deletes")
    (here / "left.txt").write_text("left uncommitted\n")
    (here / ".git" / "index").unlink()              # and the agent's index is gone too

    staged = task_workspace.stage(workspace)

    assert sorted(staged.paths) == ["committed.txt", "gone.txt", "left.txt"]
    sha = task_workspace.commit(workspace, "one commit\n", "Conveyor", "conveyor@localhost")
    assert git(git_repo, "rev-parse", "conveyor/t") == sha
    assert git(git_repo, "rev-parse", "conveyor/t~1") == git(git_repo, "rev-parse", "main")
    assert git(git_repo, "diff", "--name-only", "main", "conveyor/t").split() == ["committed.txt", "gone.txt",
                                                                                 "left.txt"]
    assert git(git_repo, "status", "--porcelain") == ""      # the user's checkout saw none of it
