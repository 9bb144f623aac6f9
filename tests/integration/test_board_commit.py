"""`commit_board: true`: board and ROADMAP.md transitions are committed on the base branch touching only those
paths; the user's staged changes stay staged and uncommitted, their working tree is untouched, no hook runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conveyor.board.commits import BoardCommitter
from conveyor.core.errors import GitError
from conveyor.workspace import git
from tests.integration.hygiene_repo import ROADMAP_ON, hygiene_repo, roadmap_path

ROADMAP = """\
# Roadmap

### 🔴 **PRIORITY 1: Board commits**

**Status**: 📝 Planned

FAKE write src/item.txt item
"""
BOARD = "work/collaboration/"


def committed_paths(repo_git: object, commit: str) -> list[str]:
    out = repo_git("show", "--name-only", "--format=", commit)  # type: ignore[operator]
    return [line for line in str(out).splitlines() if line]


def test_board_commits_leave_the_users_staged_and_unstaged_changes_alone(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_ON + "commit_board: true\n")
    roadmap_path(repo).write_text(ROADMAP, encoding="utf-8")
    (repo.path / "notes.txt").write_text("work in progress\n", encoding="utf-8")
    repo.git("add", "notes.txt")                                   # staged, not for Conveyor to commit
    (repo.path / "README.md").write_text("# scratch project\nan unstaged edit\n", encoding="utf-8")
    marker = tmp_path / "hook-ran"
    for hook in ("reference-transaction", "post-commit", "pre-commit"):
        path = repo.git_dir / "hooks" / hook
        path.write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
        path.chmod(0o755)
    before = repo.git("rev-parse", "main")
    repo.submit("t-board", description="FAKE write t.txt")
    others = ["--", ".", ":!ROADMAP.md"]                            # ROADMAP.md is the board's to commit
    staged, unstaged = repo.git("diff", "--cached"), repo.git("diff", *others)

    assert repo.run_once().code == 0
    commits = repo.git("rev-list", "--reverse", f"{before}..main").split()
    assert commits, "the transitions were committed"
    for commit in commits:
        paths = committed_paths(repo.git, commit)
        assert paths and all(p.startswith(BOARD) or p == "ROADMAP.md" for p in paths), paths
        assert repo.git("log", "-1", "--format=%an|%s", commit).startswith("Conveyor|chore(conveyor): board:")
    assert len(commits) <= 4                                        # batched, not one commit per transition
    assert "ROADMAP.md" in {p for c in commits for p in committed_paths(repo.git, c)}
    assert repo.git("show", f"main:{BOARD}done/backend-dev/t-board.yaml").startswith("id: t-board")
    assert repo.git("diff", "--cached", "--name-only") == "notes.txt"          # still staged
    assert repo.git("diff", "--cached") == staged
    assert repo.git("log", "--all", "--format=%H", "--", "notes.txt") == ""      # never committed
    assert repo.git("diff", *others) == unstaged                                        # README.md edit and others
    assert "an unstaged edit" in unstaged
    status = repo.git("status", "--porcelain", "--untracked-files=all")
    assert [line for line in status.splitlines() if BOARD in line or "ROADMAP.md" in line] == []
    assert not marker.exists()                                               # no hook ran
    assert repo.git("rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_with_another_branch_checked_out_only_the_base_branch_moves(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra="roadmap: {enabled: false}\ncommit_board: true\n")
    repo.git("checkout", "-q", "-b", "feature")
    (repo.path / "notes.txt").write_text("wip\n", encoding="utf-8")
    repo.git("add", "notes.txt")
    feature, main = repo.git("rev-parse", "feature"), repo.git("rev-parse", "main")
    repo.submit("t-other", description="FAKE write t.txt")
    repo.run_once()
    assert repo.git("rev-parse", "feature") == feature
    assert repo.git("rev-parse", "main") != main
    assert repo.git("diff", "--cached", "--name-only") == "notes.txt"


def test_a_user_commit_between_board_commits_is_built_upon(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra="roadmap: {enabled: false}\ncommit_board: true\n")
    config = repo.config()
    index_file = tmp_path / "board.index"

    def commit(message: str, tip: str | None) -> git.PathsCommit:
        return git.commit_paths(repo.path, "main", [BOARD.rstrip("/")], message, author_name="C",
                                author_email="c@x", index_file=index_file, index_tip=tip)

    (repo.board / "one.md").write_text("1\n", encoding="utf-8")
    first = commit("board one", None)
    assert first.commit is not None
    assert commit("nothing new", first.tip).commit is None                  # unchanged board: no commit
    (repo.path / "user.txt").write_text("mine\n", encoding="utf-8")
    repo.git("add", "user.txt")
    repo.git("commit", "-q", "-m", "the user's own commit")
    user_tip = repo.git("rev-parse", "main")
    (repo.board / "two.md").write_text("2\n", encoding="utf-8")
    second = commit("board two", first.tip)                                  # stale index: re-read from the tip
    assert second.commit is not None
    assert repo.git("rev-parse", f"{second.commit}^") == user_tip
    assert repo.git("show", f"{second.commit}:user.txt") == "mine"
    assert config.daemon.commit_board


def test_board_commit_failures_are_logged_and_retried(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra="roadmap: {enabled: false}\ncommit_board: true\n")
    config = repo.config()
    committer = BoardCommitter(config)
    (repo.board / "one.md").write_text("1\n", encoding="utf-8")
    committer.note("claimed", "t1")
    lock = repo.git_dir / "index.lock"
    lock.write_text("", encoding="utf-8")                                    # the user's git is busy
    with capture_logs() as logs:
        sha = committer.commit()
    assert sha is not None and repo.git("rev-parse", "main") == sha
    assert [e["event"] for e in logs] == ["board_commit.done", "board_commit.index_sync_failed"]
    lock.unlink()
    assert committer.commit() is None                                        # nothing new to commit ...
    assert repo.git("status", "--porcelain", "--", BOARD) == ""              # ... but the index caught up

    broken = BoardCommitter(config.__class__(**{**config.__dict__, "daemon": config.daemon.model_copy(
        update={"base_branch": "no-such-branch"})}))
    broken.note("claimed", "t2")
    with capture_logs() as logs:
        assert broken.commit() is None
    assert [e["event"] for e in logs] == ["board_commit.failed"]


def test_commit_paths_refuses_a_missing_branch(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra="roadmap: {enabled: false}\n")
    with pytest.raises(GitError, match="does not exist"):
        git.commit_paths(repo.path, "nope", ["work"], "m", author_name="C", author_email="c@x",
                         index_file=tmp_path / "i")
