"""The daemon end to end with the fake agent: lifecycle, ordering, dependencies, retries, recovery, the lock,
the watcher, and a stop that never loses a task."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.core.errors import LockHeld
from conveyor.core.timeutil import parse_iso
from conveyor.daemon.lock import DaemonLock, holder_pid
from conveyor.daemon.loop import Daemon
from tests.integration.conftest import DAEMON_YAML, Repo
from tests.support.waiting import wait_for

OURS = f"conveyor@{socket.gethostname()}:4242"   # the claim of a daemon on this host that died


@pytest.fixture
def background(repo: Repo) -> Iterator[Callable[[], Daemon]]:
    """Start a long-running daemon (file events on) in a thread; it is stopped and joined at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(repo.serving())


# ------------------------------------------------------------------ lifecycle
def test_a_task_goes_from_inbox_to_done_with_every_timestamp(repo: Repo) -> None:
    repo.submit("life", description="FAKE write a.txt x")
    run = repo.run_once()
    assert not (repo.inbox / "life.yaml").exists()
    assert not (repo.board / "assigned" / "backend-dev" / "life.yaml").exists()
    document = repo.done_doc("life")
    assert document["status"] == "done"
    for key in ("assigned_at", "started_at", "completed_at"):
        assert document[key].endswith("Z") and parse_iso(document[key]) is not None
    assert document["attempt"] == 1
    assert document["claimed_by"].startswith("conveyor@")
    assert list(document)[:4] == ["id", "agent", "status", "title"]     # the author's keys keep their place
    result = document["result"]
    assert set(result) >= {"summary", "artefacts", "branch", "commit", "pr_url", "tool", "model", "tokens",
                           "cost_usd", "duration_s", "session_id"}
    assert [e["event"] for e in run.logs if e["event"].startswith("task.")][:2] == ["task.claimed", "task.started"]
    assert run.events("daemon.idle_exit")[0]["completed"] == 1


def test_a_failed_task_lands_in_done_with_an_error_block(repo: Repo) -> None:
    repo.submit("fails", description="FAKE exit 4")
    repo.run_once()
    document = repo.done_doc("fails")
    assert document["status"] == "error"
    error = document["error"]
    assert set(error) == {"message", "kind", "timestamp"}      # metadata privacy: no transcript is kept
    assert "exited with code 4" in error["message"]
    assert error["timestamp"].endswith("Z")
    assert "result" not in document
    assert not (repo.git_dir / "conveyor" / "logs" / "fails").exists()


def test_in_full_privacy_the_error_block_points_at_the_transcript(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML + "privacy: full\n")
    repo.submit("fails-logged", description="FAKE exit 4")
    repo.run_once()
    error = repo.done_doc("fails-logged")["error"]
    assert Path(error["log"]).read_text().startswith("fake agent")
    assert "exited with code 4" in (repo.rows("fails-logged")[0]["error"] or "")


def test_a_crash_is_retried_as_the_next_attempt(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 2"))
    repo.submit("flaky", description="FAKE exit@1 9\nFAKE write a.txt x")
    repo.run_once()
    document = repo.done_doc("flaky")
    assert (document["status"], document["attempt"]) == ("done", 2)
    assert [(row["attempt"], row["outcome"]) for row in repo.rows("flaky")] == [(1, "crashed"), (2, "ok")]


def test_attempts_run_out_into_an_error(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 2"))
    repo.submit("broken", description="FAKE exit 9")
    repo.run_once()
    document = repo.done_doc("broken")
    assert (document["status"], document["attempt"]) == ("error", 2)
    assert len(repo.rows("broken")) == 2


def test_an_agent_error_is_not_retried(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 3"))
    repo.submit("said-no", agent="json-agent", description="FAKE exit 1")   # is_error: true in the result
    repo.run_once()
    document = repo.done_doc("said-no", "json-agent")
    assert (document["status"], document["error"]["kind"]) == ("error", "agent_error")
    assert len(repo.rows("said-no")) == 1


# ------------------------------------------------------------------ ordering and dependencies
def test_one_slot_runs_tasks_by_priority_then_age(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("max_parallel: 2", "max_parallel: 1"))
    repo.submit("p-low", priority="low", created_at="2020-01-01T00:00:00Z")
    repo.submit("p-normal-new", created_at="2026-01-02T00:00:00Z")
    repo.submit("p-normal-old", created_at="2026-01-01T00:00:00Z")
    repo.submit("p-critical", priority="CRITICAL", created_at="2027-01-01T00:00:00Z")
    repo.run_once()
    order = [row["task_id"] for row in repo.rows()]
    assert order == ["p-critical", "p-normal-old", "p-normal-new", "p-low"]


def test_a_dependency_in_the_same_inbox_runs_first_in_the_same_run(repo: Repo) -> None:
    repo.submit("dep-second", priority="critical", dependencies=["dep-first"], description="FAKE write b.txt x")
    repo.submit("dep-first", priority="low", description="FAKE write a.txt x")
    repo.run_once()
    assert [row["task_id"] for row in repo.rows()] == ["dep-first", "dep-second"]
    assert repo.done_doc("dep-second")["status"] == "done"


def test_a_failed_dependency_keeps_the_task_waiting_with_its_reason(repo: Repo) -> None:
    repo.submit("dep-broken", description="FAKE exit 3")
    repo.submit("dep-waiter", dependencies=["dep-broken"])
    repo.submit("dep-unknown", dependencies=["not-written-yet"])
    repo.run_once()
    assert (repo.inbox / "dep-waiter.yaml").exists() and (repo.inbox / "dep-unknown.yaml").exists()
    state = json.loads((repo.git_dir / "conveyor" / "status.json").read_text())
    reasons = {item["id"]: item["reason"] for item in state["waiting"]}
    assert reasons["dep-waiter"].startswith("dependency dep-broken failed")
    assert reasons["dep-unknown"] == "waiting for not-written-yet, which is not on the board yet"
    assert state["stopped"] is True


# ------------------------------------------------------------------ environment and prompt
def test_the_agent_sees_only_allowlisted_environment(repo: Repo) -> None:
    repo.submit("env", description="nothing")
    repo.run_once(env={"SECRET_TOKEN": "do-not-leak", "FAKE_VISIBLE": "yes", "NOTIFY_SOCKET": "/run/x"})
    env = repo.agent.last("env")["env"]
    assert env["FAKE_VISIBLE"] == "yes"
    assert env["FAKE_AGENT_OUT"] == str(repo.out)
    assert "SECRET_TOKEN" not in env and "NOTIFY_SOCKET" not in env
    assert not any(name.startswith("GIT_") for name in env)


def test_the_prompt_carries_the_task_and_instructions(repo: Repo) -> None:
    (repo.path / "docs").mkdir()
    (repo.path / "docs" / "backend.md").write_text("You are the backend developer of this project.\n")
    repo.write_config("agents.yaml", "agents:\n  default:\n    tool: fake\n    instructions: docs/backend.md\n")
    repo.submit("prompted", description="Please add the endpoint.", artefacts=["src/api.py"],
                acceptance_criteria=["returns 200"])
    repo.run_once()
    prompt = repo.agent_prompt("prompted")
    assert prompt.startswith("You are the backend developer of this project.")
    assert "# Task prompted: Title of prompted" in prompt
    assert "Please add the endpoint." in prompt and "- src/api.py" in prompt
    assert "## Acceptance criteria\n- returns 200" in prompt


def test_an_unreadable_instructions_file_fails_the_task_naming_it(repo: Repo) -> None:
    repo.write_config("agents.yaml", "agents:\n  default:\n    tool: fake\n    instructions: docs/missing.md\n")
    repo.submit("no-instructions")
    repo.run_once()
    document = repo.done_doc("no-instructions")
    assert document["status"] == "error"
    assert "docs/missing.md" in document["error"]["message"] and "agents.yaml" in document["error"]["message"]
    assert repo.worktrees() == [str(repo.path)]


# ------------------------------------------------------------------ recovery and the lock
def test_recovery_reruns_an_interrupted_task_without_spending_an_attempt(repo: Repo) -> None:
    """Issue 15: a daemon's death is not the task's failure (this used to finish as attempt 2)."""
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 3"))
    assigned = repo.board / "assigned" / "backend-dev"
    assigned.mkdir(parents=True)
    (assigned / "interrupted.yaml").write_text(repo.task_text("interrupted", description="FAKE write a.txt x",
                                                              status="in_progress", attempt=1, claimed_by=OURS))
    stale = repo.worktrees_dir / "interrupted"
    stale.mkdir(parents=True)
    repo.run_once()
    document = repo.done_doc("interrupted")
    assert (document["status"], document["attempt"], document["interruptions"]) == ("done", 1, 1)
    assert not stale.exists()


def test_recovery_finishes_a_task_whose_commit_already_exists(repo: Repo) -> None:
    repo.git("branch", "conveyor/committed", "main")
    worktree = repo.path.parent / "wt"
    repo.git("worktree", "add", "-q", str(worktree), "conveyor/committed")
    (worktree / "done.txt").write_text("x\n")
    repo.git("-C", str(worktree), "add", "done.txt")
    repo.git("-C", str(worktree), "commit", "-q", "-m", "feat(backend-dev): x\n\nConveyor-Task: committed")
    repo.git("worktree", "remove", str(worktree))
    assigned = repo.board / "assigned" / "backend-dev"
    assigned.mkdir(parents=True)
    (assigned / "committed.yaml").write_text(repo.task_text("committed", description="FAKE write b.txt x",
                                                            status="in_progress", attempt=1, claimed_by=OURS))
    repo.run_once()
    result = repo.done_doc("committed")["result"]
    assert result["commit"] == repo.git("rev-parse", "conveyor/committed")
    assert not (repo.out / "committed.prompt").exists()          # the agent did not run again


def test_recovery_fails_a_task_that_reached_the_interruption_limit(repo: Repo) -> None:
    """Issue 15: interruptions have their own limit (this used to be "no attempts left" after one)."""
    assigned = repo.board / "assigned" / "backend-dev"
    assigned.mkdir(parents=True)
    (assigned / "spent.yaml").write_text(repo.task_text("spent", status="in_progress", attempt=1, interruptions=4,
                                                        claimed_by=OURS))
    repo.run_once()
    document = repo.done_doc("spent")
    assert (document["status"], document["error"]["kind"]) == ("error", "interrupted")


def test_a_second_daemon_is_refused_naming_the_holder(repo: Repo) -> None:
    lock_path = repo.git_dir / "conveyor" / "daemon.lock"
    with DaemonLock(lock_path):
        assert holder_pid(lock_path) == os.getpid()
        repo.submit("locked-out")
        with pytest.raises(LockHeld, match=rf"pid {os.getpid()}\) already serves"):
            repo.run_once()
        assert (repo.inbox / "locked-out.yaml").exists()
    assert holder_pid(lock_path) is None


# ------------------------------------------------------------------ the long-running daemon
def test_a_dropped_file_is_picked_up_by_the_watcher(repo: Repo, background: Callable[[], Daemon]) -> None:
    background()
    wait_for(lambda: (repo.git_dir / "conveyor" / "status.json").exists())
    repo.submit("watched", description="FAKE write w.txt x")         # rescan is 30 s away: only events wake it
    wait_for(lambda: repo.done_path("watched").exists())
    assert repo.done_doc("watched")["status"] == "done"


def test_bad_input_does_not_stop_a_running_daemon(repo: Repo, background: Callable[[], Daemon]) -> None:
    background()
    repo.drop("junk.yaml", "id: [\n")
    repo.submit("after-junk", description="FAKE write a.txt x")
    wait_for(lambda: repo.done_path("after-junk").exists())
    wait_for(lambda: (repo.rejected / "junk.yaml").exists())


def test_a_stop_mid_run_requeues_the_task_and_the_next_run_finishes_it(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("drain_grace_s: 10", "drain_grace_s: 0.2"))
    repo.submit("interrupt-me", description="FAKE sleep@1 60\nFAKE write a.txt x")
    with repo.serving(watch=False):
        wait_for(lambda: repo.agent_started("interrupt-me"))
    waiting = repo.board / "assigned" / "backend-dev" / "interrupt-me.yaml"
    assert waiting.exists()                                          # not lost, not failed
    assert repo.worktrees() == [str(repo.path)]
    repo.run_once()
    document = repo.done_doc("interrupt-me")
    assert document["status"] == "done"
    assert document["result"]["artefacts"] == ["a.txt"]


def test_a_reload_with_a_broken_config_keeps_the_old_one(repo: Repo, background: Callable[[], Daemon]) -> None:
    daemon = background()
    wait_for(lambda: (repo.git_dir / "conveyor" / "status.json").exists())
    repo.write_config("agents.yaml", "agents:\n  default: {tool: fkae}\n")
    daemon.request_reload()
    repo.submit("after-reload", description="FAKE write a.txt x")
    wait_for(lambda: repo.done_path("after-reload").exists())
    assert repo.done_doc("after-reload")["result"]["tool"] == "fake"
