"""A daemon process killed (SIGKILL, its whole process group) in the middle of a follow-up, then started again:
the PR's branch gets exactly one new commit and the thread exactly one answer, wherever the kill came.

- while the agent works (nothing committed): the follow-up runs again, the crash costing no attempt;
- after the commit, while the daemon asks the PR right before pushing: recovery pushes that commit and
  answers, the agent does not run again;
- while the answer is being posted (GitHub got it, the daemon never heard back): recovery finds the answer
  by its marker and posts none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.daemon_process import DaemonProcess, running_daemon
from tests.integration.gate_support import GH_REPO, TOKEN, TOKEN_ENV, Project
from tests.integration.test_follow_up_runner import (
    ORIGINAL,
    answers,
    follow_up_file,
    origin_head,
    origin_log,
    original_pr,
)
from tests.support.agent_script import act, resuming, work
from tests.support.fake_github import FakeGitHub
from tests.support.waiting import wait_for

CHANGE = work({"app.py": "def main():\n    return 2\n"}, "main() returns 2 now")


@pytest.fixture
def project(tmp_path: Path, github: FakeGitHub) -> Project:
    return original_pr(tmp_path, github)


def _finished(project: Project, task_id: str) -> bool:
    return project.repo.done_path(task_id).exists()


def _run_to_the_end(project: Project, task_id: str) -> DaemonProcess:
    with running_daemon(project.repo.path, env={TOKEN_ENV: TOKEN}) as daemon:
        wait_for(lambda: _finished(project, task_id), timeout=90, what=f"{task_id} finished")
        return daemon


def _assert_one_commit_one_answer(project: Project, github: FakeGitHub, task_id: str, before: str) -> None:
    document = project.repo.done_doc(task_id)
    assert document["status"] == "done", document.get("error")
    after = origin_head(project, f"conveyor/{ORIGINAL}")
    assert origin_log(project, after)[1:] == origin_log(project, before)
    assert project.repo.git("show", f"{after}:app.py") == "def main():\n    return 2"
    assert document["result"]["commit"] == after
    assert len(answers(github, task_id)) == 1
    assert len(github.pulls(GH_REPO)) == 1
    assert f"conveyor/{task_id}" not in project.repo.branches()


def test_killed_while_the_agent_works_the_follow_up_runs_again_once(project: Project, github: FakeGitHub) -> None:
    before = origin_head(project, f"conveyor/{ORIGINAL}")
    task_id = follow_up_file(project, "c90", "Return 2.")
    project.script(task_id, [act("sleep", seconds=60)], [resuming(f"session-{ORIGINAL}"), *CHANGE])
    with running_daemon(project.repo.path, env={TOKEN_ENV: TOKEN}) as daemon:
        wait_for(lambda: project.repo.agent_started(task_id), timeout=60, what="the agent started")
        daemon.kill_group()

    _run_to_the_end(project, task_id)

    _assert_one_commit_one_answer(project, github, task_id, before)
    assert len(project.invocations(task_id)) == 2
    assert project.repo.done_doc(task_id)["attempt"] == 1      # the crash cost no attempt


def test_killed_between_the_commit_and_the_push_recovery_pushes_it(project: Project, github: FakeGitHub) -> None:
    before = origin_head(project, f"conveyor/{ORIGINAL}")
    task_id = follow_up_file(project, "c91", "Return 2.")
    project.script(task_id, CHANGE)
    # the first read of the PR (before the agent) passes; the second (after the commit, before the push) stalls
    github.run_before_next(lambda: None, method="GET", path_contains="/pulls/1", count=1)
    github.stall_next(30, method="GET", path_contains="/pulls/1", count=1)
    with running_daemon(project.repo.path, env={TOKEN_ENV: TOKEN}) as daemon:
        daemon.wait_event("task.committed", lambda e: e.get("task_id") == task_id, timeout=60)
        daemon.kill_group()
    assert origin_head(project, f"conveyor/{ORIGINAL}") == before          # not pushed yet
    assert f"conveyor/{task_id}" in project.repo.branches()                # the commit waits on the work branch

    _run_to_the_end(project, task_id)

    _assert_one_commit_one_answer(project, github, task_id, before)
    assert len(project.invocations(task_id)) == 1                           # the agent did not run again
    assert "recovery" in project.repo.done_doc(task_id)["result"]["recovered"]


def test_killed_while_the_answer_is_posted_recovery_does_not_answer_twice(project: Project,
                                                                          github: FakeGitHub) -> None:
    before = origin_head(project, f"conveyor/{ORIGINAL}")
    task_id = follow_up_file(project, "c92", "Return 2.")
    project.script(task_id, CHANGE)
    github.stall_next(3, method="POST", path_contains="/issues/1/comments")
    with running_daemon(project.repo.path, env={TOKEN_ENV: TOKEN}) as daemon:
        wait_for(lambda: bool(github.requests_to("POST", r"/repos/octo/widgets/issues/1/comments")), timeout=60,
                 what="the answer posted")
        daemon.kill_group()
    wait_for(lambda: len(answers(github, task_id)) == 1, timeout=30, what="GitHub stored the answer")
    assert origin_head(project, f"conveyor/{ORIGINAL}") != before          # pushed before the kill

    _run_to_the_end(project, task_id)

    _assert_one_commit_one_answer(project, github, task_id, before)
    assert len(project.invocations(task_id)) == 1
