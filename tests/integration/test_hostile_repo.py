"""The user's repository in awkward states: dirty, on a detached HEAD, rebasing the base branch (in the main
or a linked worktree), or without the base branch. Tasks run, or wait with a sentence saying what to do;
the user's working tree, index and HEAD are never touched."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.daemon.loop import Daemon
from tests.integration.conftest import DAEMON_YAML, Repo
from tests.support.waiting import wait_for

BOARD = "work/collaboration/"


def snapshot(repo: Repo) -> dict[str, Any]:
    """Everything of the user's that a daemon must leave alone (the board folders are the daemon's)."""
    files = {}
    for path in sorted(repo.path.rglob("*")):
        relative = path.relative_to(repo.path).as_posix()
        if path.is_file() and not relative.startswith((".git/", BOARD)):
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    status = [line for line in repo.git("status", "--porcelain=v1", "--untracked-files=all", "--ignored")
              .splitlines() if BOARD not in line]
    head = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=repo.path, capture_output=True,
                          text=True, check=False).stdout.strip()
    index = (repo.git_dir / "index").read_bytes()
    return {"files": files, "status": status, "head": head, "head_commit": repo.git("rev-parse", "HEAD"),
            "index": hashlib.sha256(index).hexdigest(), "stash": repo.git("stash", "list")}


@pytest.fixture
def start(repo: Repo) -> Iterator[Callable[[], Daemon]]:
    """A long-running daemon in a thread (rescan every half second), stopped at teardown."""
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("rescan_interval_s: 30", "rescan_interval_s: 0.5"))
    repo.git("commit", "-q", "-am", "rescan often")
    with contextlib.ExitStack() as stack:

        def run() -> Daemon:
            daemon = stack.enter_context(repo.serving())
            repo.wait_started()
            return daemon

        yield run


def waiting_reason(repo: Repo, task_id: str) -> str | None:
    try:
        state = json.loads((repo.git_dir / "conveyor" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return next((w["reason"] for w in state["waiting"] if w["id"] == task_id), None)


def test_a_dirty_working_tree_is_left_exactly_as_it_was(repo: Repo, start: Callable[[], Daemon]) -> None:
    (repo.path / "README.md").write_text("# changed by the user, not committed\n")
    (repo.path / "staged.txt").write_text("staged\n")
    repo.git("add", "staged.txt")
    (repo.path / "a.txt").write_text("the user's own a.txt, untracked\n")   # the agent writes a.txt too
    (repo.path / ".gitignore").write_text("*.log\n")
    (repo.path / "debug.log").write_text("ignored\n")
    before = snapshot(repo)
    start()
    repo.submit("beside-dirt", description="FAKE write a.txt from the agent")
    wait_for(lambda: repo.done_path("beside-dirt").exists(), what="the task to run")
    assert repo.done_doc("beside-dirt")["status"] == "done"
    assert repo.git("show", "conveyor/beside-dirt:a.txt") == "from the agent"
    assert snapshot(repo) == before


def test_a_detached_head_is_left_detached(repo: Repo, start: Callable[[], Daemon]) -> None:
    repo.git("checkout", "-q", "--detach", "HEAD")
    before = snapshot(repo)
    start()
    repo.submit("detached", description="FAKE write a.txt x")
    wait_for(lambda: repo.done_path("detached").exists(), what="the task to run")
    assert repo.done_doc("detached")["status"] == "done"
    assert snapshot(repo) == before and before["head"] == ""


def start_conflicting_rebase(repo: Repo, where: Path) -> None:
    """`main` rebased onto a branch that conflicts with it, stopped at the conflict (rebase-merge state)."""
    repo.git("branch", "side", "main")
    repo.git("-C", str(where), "checkout", "-q", "side")
    (where / "conflict.txt").write_text("side\n")
    repo.git("-C", str(where), "add", "conflict.txt")
    repo.git("-C", str(where), "commit", "-q", "-m", "side")
    repo.git("-C", str(where), "checkout", "-q", "main")
    (where / "conflict.txt").write_text("main\n")
    repo.git("-C", str(where), "add", "conflict.txt")
    repo.git("-C", str(where), "commit", "-q", "-m", "main")
    done = subprocess.run(["git", "-C", str(where), "rebase", "side"], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "conflict" in (done.stdout + done.stderr).lower()


@pytest.mark.parametrize("place", ["main worktree", "linked worktree"])
def test_a_rebase_of_the_base_branch_makes_tasks_wait_until_it_is_over(repo: Repo, start: Callable[[], Daemon],
                                                                      tmp_path: Path, place: str) -> None:
    where = repo.path
    if place == "linked worktree":
        repo.git("checkout", "-q", "-b", "elsewhere")
        where = tmp_path / "users-worktree"
        repo.git("worktree", "add", "-q", str(where), "main")
    start_conflicting_rebase(repo, where)
    before = snapshot(repo)
    start()
    repo.submit("during-rebase", description="FAKE write a.txt x")
    wait_for(lambda: waiting_reason(repo, "during-rebase") is not None, what="the task to wait")
    reason = waiting_reason(repo, "during-rebase")
    assert reason == "'main' is being rebased; finish or abort the rebase (git rebase --continue/--abort)"
    assert (repo.inbox / "during-rebase.yaml").exists() and snapshot(repo) == before
    repo.git("-C", str(where), "rebase", "--abort")
    after_abort = snapshot(repo)
    wait_for(lambda: repo.done_path("during-rebase").exists(), what="the task to run after the rebase")
    assert repo.done_doc("during-rebase")["status"] == "done"
    assert snapshot(repo) == after_abort


def test_a_missing_base_branch_makes_tasks_wait_saying_how_to_fix_it(repo: Repo, start: Callable[[], Daemon]) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("rescan_interval_s: 30", "rescan_interval_s: 0.5")
                      .replace("base_branch: main", "base_branch: trunk"))
    repo.git("commit", "-q", "-am", "base trunk")
    before = snapshot(repo)
    start()
    repo.submit("needs-trunk", description="FAKE write a.txt x")
    wait_for(lambda: waiting_reason(repo, "needs-trunk") is not None, what="the task to wait")
    assert waiting_reason(repo, "needs-trunk") == ("the base branch 'trunk' does not exist; create it (git branch "
                                                   "trunk) or set base_branch in config/daemon.yaml")
    assert snapshot(repo) == before
    repo.git("branch", "trunk", "main")
    wait_for(lambda: repo.done_path("needs-trunk").exists(), what="the task to run on the new branch")
    assert repo.done_doc("needs-trunk")["status"] == "done"
    assert repo.git("merge-base", "--is-ancestor", "trunk", "conveyor/needs-trunk") == ""


def test_an_unexpected_error_in_the_main_loop_is_logged_and_the_loop_goes_on(repo: Repo,
                                                                           start: Callable[[], Daemon]) -> None:
    """Someone replaces inbox/ with a file: every scan fails until it is put back; the daemon survives it."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        start()
        moved = repo.path.parent / "inbox-aside"
        repo.inbox.rename(moved)
        repo.inbox.write_text("not a folder\n")
        wait_for(lambda: any(e["event"] == "daemon.loop_error" for e in logs), what="the failing turn")
        repo.inbox.unlink()
        moved.rename(repo.inbox)
        repo.submit("after-the-trouble", description="FAKE write a.txt x")
        wait_for(lambda: repo.done_path("after-the-trouble").exists(), what="the loop to go on")
    errors = [e for e in logs if e["event"] == "daemon.loop_error"]
    assert errors[0]["consecutive"] == 1 and errors[0]["limit"] == 10
