"""Start-up recovery (README, "How it behaves"), one rule per test: whatever a crash left in `assigned/`, in git and in
telemetry is resumed, run again or finished, never lost and never done twice."""

from __future__ import annotations

import socket
import time
from typing import Any

import yaml

from conveyor.core.timeutil import utc_iso
from conveyor.telemetry.store import InvocationEnd, InvocationStart, Telemetry
from tests.integration.conftest import DAEMON_YAML, Repo

AGENT = "backend-dev"
OURS = f"conveyor@{socket.gethostname()}:4242"     # the claim a daemon on this host wrote before it died


def leave_in_assigned(repo: Repo, task_id: str, description: str = "FAKE write a.txt x", **fields: Any) -> None:
    folder = repo.board / "assigned" / AGENT
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task_id}.yaml").write_text(repo.task_text(task_id, description=description, **fields))


def agent_ran(repo: Repo, task_id: str) -> bool:
    return (repo.out / f"{task_id}.prompt").exists()


def branch_commits(repo: Repo, task_id: str) -> list[str]:
    return repo.git("rev-list", f"main..conveyor/{task_id}").split()


def test_a_claimed_task_that_never_started_runs_as_its_first_attempt(repo: Repo) -> None:
    leave_in_assigned(repo, "claimed", status="new")
    run = repo.run_once()
    document = repo.done_doc("claimed")
    assert (document["status"], document["attempt"]) == ("done", 1)
    assert run.events("recovery.requeued") == []


def test_worktrees_left_in_the_old_default_folder_are_removed_too(repo: Repo) -> None:
    """Earlier builds put worktrees in <git dir>/conveyor/worktrees; after an upgrade nothing else removes them."""
    legacy = repo.config().state_dir / "worktrees" / "old-task"
    repo.git("worktree", "add", "-q", "-b", "conveyor/old-task", str(legacy), "main")
    repo.git("worktree", "lock", "--reason", "initializing", str(legacy))
    orphan = repo.config().state_dir / "worktrees" / "orphan-folder"
    orphan.mkdir()
    run = repo.run_once()
    assert repo.worktrees() == [str(repo.path)] and not legacy.exists() and not orphan.exists()
    assert run.events("worktrees.reaped")[0]["removed"] == 2


def test_an_interrupted_run_is_cleaned_up_and_run_again_without_spending_an_attempt(repo: Repo) -> None:
    """The crash left a registered (and locked) worktree, the task branch without a commit, and a ref lock.
    (Issue 15: the interrupted run no longer spends an attempt; it used to finish as attempt 2.)"""
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 3"))
    leave_in_assigned(repo, "crashed", status="in_progress", attempt=1, claimed_by=OURS)
    stale = repo.config().worktrees_dir / "crashed"
    repo.git("worktree", "add", "-q", "-b", "conveyor/crashed", str(stale), "main")
    (stale / "half-written.txt").write_text("the interrupted agent's work\n")
    repo.git("worktree", "lock", "--reason", "initializing", str(stale))
    ref_lock = repo.git_dir / "refs" / "heads" / "conveyor" / "crashed.lock"
    ref_lock.write_text("")
    run = repo.run_once()
    document = repo.done_doc("crashed")
    assert (document["status"], document["attempt"], document["interruptions"]) == ("done", 1, 1)
    assert document["result"]["artefacts"] == ["a.txt"]                   # nothing of the interrupted run
    assert len(branch_commits(repo, "crashed")) == 1
    assert repo.worktrees() == [str(repo.path)] and not stale.exists()
    assert not ref_lock.exists()
    assert run.events("recovery.ref_locks_removed")[0]["locks"] == [str(ref_lock)]
    assert run.events("recovery.requeued")[0]["next_attempt"] == 1


def test_a_ref_lock_that_is_not_ours_is_reported_and_left_alone(repo: Repo) -> None:
    user_lock = repo.git_dir / "refs" / "heads" / "feature.lock"
    user_lock.write_text("")
    leave_in_assigned(repo, "beside-a-lock", status="in_progress", attempt=0, claimed_by=OURS)
    run = repo.run_once()
    assert user_lock.exists()
    assert run.events("recovery.git_locks_present")[0]["locks"] == [str(user_lock)]
    assert repo.done_doc("beside-a-lock")["status"] == "done"


def test_four_interruptions_in_a_row_spend_nothing_and_the_fifth_is_an_error_that_says_so(repo: Repo) -> None:
    """Issue 15: interruptions have their own limit (daemon.interruptions, default 5). Before, a task with
    `attempts` used up by daemon deaths failed with "no attempts left"."""
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 2"))
    leave_in_assigned(repo, "killed-4", status="in_progress", attempt=2, interruptions=3, claimed_by=OURS)
    leave_in_assigned(repo, "killed-5", status="in_progress", attempt=1, interruptions=4, claimed_by=OURS)
    repo.run_once()
    survivor = repo.done_doc("killed-4")
    assert (survivor["status"], survivor["attempt"], survivor["interruptions"]) == ("done", 2, 4)
    document = repo.done_doc("killed-5")
    assert (document["status"], document["error"]["kind"]) == ("error", "interrupted")
    assert "5 times in a row" in document["error"]["message"] and "daemon.interruptions" in document["error"]["message"]
    assert not agent_ran(repo, "killed-5")


def test_a_task_finished_but_not_yet_moved_is_moved_not_run_again(repo: Repo) -> None:
    telemetry = Telemetry(repo.telemetry_db)
    row = telemetry.start(InvocationStart("finished", AGENT, "fake", None, 1, 1.0))
    telemetry.finish(row, InvocationEnd(2.0, 1.0, "ok"))
    leave_in_assigned(repo, "finished", status="done", attempt=1, completed_at=utc_iso(time.time()),
                      claimed_by=OURS, result={"summary": "no changes", "branch": None, "commit": None})
    failed = telemetry.start(InvocationStart("failed-before", AGENT, "fake", None, 1, 1.0))
    telemetry.finish(failed, InvocationEnd(2.0, 1.0, "agent_error"))
    leave_in_assigned(repo, "failed-before", status="error", attempt=1, claimed_by=OURS,
                      error={"message": "no", "kind": "x"})
    before = (repo.board / "assigned" / AGENT / "finished.yaml").read_bytes()
    run = repo.run_once()
    assert repo.done_path("finished").read_bytes() == before               # moved as it was
    assert repo.done_doc("failed-before")["error"] == {"message": "no", "kind": "x"}
    assert not agent_ran(repo, "finished") and not agent_ran(repo, "failed-before")
    assert sorted(e["task_id"] for e in run.events("recovery.moved_finished")) == ["failed-before", "finished"]


def test_a_done_status_the_author_wrote_on_a_task_that_never_ran_here_is_left_alone(repo: Repo) -> None:
    """Issue 15 reversed this: a `done` task the workflow left in assigned/ used to run again and lose its
    result block. Settled is settled."""
    leave_in_assigned(repo, "copied", status="done", result={"summary": "from another board"})
    path = repo.board / "assigned" / AGENT / "copied.yaml"
    before = path.read_bytes()
    run = repo.run_once()
    assert not agent_ran(repo, "copied")
    assert path.read_bytes() == before
    assert run.events("recovery.done")[0]["left_alone"] == 1


def test_telemetry_rows_left_running_become_interrupted(repo: Repo) -> None:
    telemetry = Telemetry(repo.telemetry_db)
    running = telemetry.start(InvocationStart("elsewhere", AGENT, "fake", None, 1, 1.0))
    finished = telemetry.start(InvocationStart("elsewhere", AGENT, "fake", None, 2, 3.0))
    telemetry.finish(finished, InvocationEnd(4.0, 1.0, "ok"))
    run = repo.run_once()
    outcomes = {row["id"]: row["outcome"] for row in repo.rows("elsewhere")}
    assert outcomes == {running: "interrupted", finished: "ok"}
    assert run.events("recovery.telemetry_interrupted")[0]["rows"] == 1
    assert next(row["finished_at"] for row in repo.rows("elsewhere") if row["id"] == running) is not None


def test_temporary_files_of_interrupted_rewrites_are_removed_but_not_an_authors(repo: Repo) -> None:
    assigned = repo.board / "assigned" / AGENT
    assigned.mkdir(parents=True)
    done = repo.board / "done" / AGENT
    done.mkdir(parents=True)
    leftovers = [assigned / ".t.yaml.abc123.tmp", done / ".u.yaml.def456.tmp"]
    for path in leftovers:
        path.write_text("id: t\n")
    authors = repo.inbox / ".being-written.yaml.tmp"
    authors.write_text("id: being-written\n")
    run = repo.run_once()
    assert not any(path.exists() for path in leftovers)
    assert authors.exists()
    assert run.events("recovery.temp_files_removed")[0]["removed"] == 2


def test_an_unreadable_file_in_assigned_is_rejected_with_its_reasons(repo: Repo) -> None:
    folder = repo.board / "assigned" / AGENT
    folder.mkdir(parents=True)
    (folder / "mangled.yaml").write_text("id: mangled\nagent: [\n")
    repo.submit("unharmed", description="FAKE write a.txt x")
    run = repo.run_once()
    report = yaml.safe_load((repo.rejected / "mangled.yaml.error.yaml").read_text())
    assert "not valid YAML" in report["problems"][0]["message"]
    assert run.events("recovery.rejected")[0]["task_id"] == "mangled"
    assert repo.done_doc("unharmed")["status"] == "done"
