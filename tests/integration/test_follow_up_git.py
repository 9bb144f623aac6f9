"""The two git calls of a follow-up, on real repositories: fetching a PR's branch and the fast-forward push.

Whatever a task file or an agent says, the push code itself only ever moves a conveyor/* branch forward:
never the base branch, never a force, never a ref name built from anything but a commit sha."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.core.errors import GitError
from conveyor.workspace import git as cgit
from tests.conftest import git


@pytest.fixture
def origin(git_repo: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(git_repo, "remote", "add", "origin", str(bare))
    git(git_repo, "branch", "conveyor/T-1")
    git(git_repo, "push", "-q", "origin", "main", "conveyor/T-1")
    return bare


def _commit_on(repo: Path, parent: str, name: str) -> str:
    tree = git(repo, "rev-parse", f"{parent}^{{tree}}")
    return git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit-tree", tree, "-p", parent,
               "-m", name)


def test_fetch_returns_the_remote_head_and_none_for_a_missing_branch(git_repo: Path, origin: Path) -> None:
    head = git(origin, "rev-parse", "refs/heads/conveyor/T-1")
    assert cgit.fetch_branch(git_repo, "origin", "conveyor/T-1") == head
    assert git(git_repo, "rev-parse", "refs/remotes/origin/conveyor/T-1") == head
    assert cgit.fetch_branch(git_repo, "origin", "conveyor/none") is None


@pytest.mark.parametrize("branch", ["main", "feature", "refs/heads/main", "--upload-pack=x"])
def test_fetch_refuses_anything_but_a_task_branch(git_repo: Path, origin: Path, branch: str) -> None:
    with pytest.raises(GitError, match="only conveyor/"):
        cgit.fetch_branch(git_repo, "origin", branch)


def test_a_fast_forward_moves_the_branch_and_a_moved_branch_is_refused_not_forced(git_repo: Path,
                                                                                 origin: Path) -> None:
    head = git(origin, "rev-parse", "refs/heads/conveyor/T-1")
    ours = _commit_on(git_repo, head, "ours")
    theirs = _commit_on(git_repo, head, "theirs")
    git(git_repo, "push", "-q", "origin", f"{theirs}:refs/heads/conveyor/T-1")   # someone pushed meanwhile

    with pytest.raises(cgit.BranchMoved):
        cgit.push_fast_forward(git_repo, "origin", ours, "conveyor/T-1", base="main")
    assert git(origin, "rev-parse", "refs/heads/conveyor/T-1") == theirs          # nothing overwritten

    on_top = _commit_on(git_repo, theirs, "on top")
    cgit.push_fast_forward(git_repo, "origin", on_top, "conveyor/T-1", base="main")
    assert git(origin, "rev-parse", "refs/heads/conveyor/T-1") == on_top
    cgit.push_fast_forward(git_repo, "origin", on_top, "conveyor/T-1", base="main")   # again: a no-op


@pytest.mark.parametrize(("sha", "branch", "base"), [
    ("{sha}", "main", "main"), ("{sha}", "feature", "main"), ("{sha}", "conveyor/main", "conveyor/main"),
    ("+{sha}", "conveyor/T-1", "main"), ("HEAD", "conveyor/T-1", "main"),
    ("{sha}:refs/heads/main", "conveyor/T-1", "main")])
def test_the_push_refuses_the_base_other_branches_and_anything_but_a_sha(git_repo: Path, origin: Path, sha: str,
                                                                         branch: str, base: str) -> None:
    head = git(origin, "rev-parse", "refs/heads/main")
    commit = _commit_on(git_repo, head, "x")
    with pytest.raises(GitError, match="refusing to push"):
        cgit.push_fast_forward(git_repo, "origin", sha.format(sha=commit), branch, base=base)
    assert git(origin, "rev-parse", "refs/heads/main") == head
