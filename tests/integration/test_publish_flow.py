"""Publishing through the daemon: push to a real bare `origin`, open the pull request on FakeGitHub (127.0.0.1),
idempotent across a crash, partial work as a draft, and a local branch when there is nowhere to publish."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.core.errors import ConfigError
from conveyor.core.task import parse_task
from conveyor.daemon.status import collect_status
from conveyor.pipeline.republish import retry_publications
from conveyor.publish.task_branch import commit_message
from conveyor.workspace import git as cgit
from tests.integration.gate_support import (
    GH_REPO,
    TOKEN,
    TOKEN_ENV,
    Project,
    daemon_yaml,
    make_project,
    python_check,
)
from tests.support.agent_script import act, work
from tests.support.fake_github import FakeGitHub

CHECK = python_check("import sys; sys.exit(0 if open('app.py').read().startswith('def') else 1)")
WORK = work({"app.py": "def main():\n    return 1\n"}, "Added main() to app.py")


@pytest.fixture
def project(tmp_path: Path, github: FakeGitHub) -> Project:
    return make_project(tmp_path, with_remote=True, github=github)


def creates(github: FakeGitHub) -> list[Any]:
    return github.requests_to("POST", rf"/repos/{GH_REPO}/pulls")


# ------------------------------------------------------------------ the pull request
def test_the_branch_is_pushed_and_a_pull_request_opened_with_the_whole_story(project: Project,
                                                                             github: FakeGitHub) -> None:
    project.configure(verify=[CHECK])
    project.script("t-pr", WORK)
    project.repo.submit("t-pr", description="Add a main function to app.py.\nKeep it small.", labels=["api"],
                        title="Add   main()")
    project.run()

    result = project.repo.done_doc("t-pr")["result"]
    (pull,) = github.pulls_for(GH_REPO, "conveyor/t-pr")
    assert result["pr_url"] == f"{github.web_url}/{GH_REPO}/pull/{pull.number}"
    assert result["publish"] == f"pushed to 'origin'; opened pull request #{pull.number}"
    assert (pull.title, pull.base, pull.draft, pull.labels) == ("Add main()", "main", False, ("conveyor", "bot", "api"))
    assert pull.head_sha == result["commit"]                              # the pushed commit is the result's
    assert project.remote_branches() == ["conveyor/t-pr", "main"]
    body = pull.body or ""
    for text in ("## Task `t-pr`", "**Agent:** backend-dev", "**Tool:** scripted", "> Add a main function to app.py.",
                 "Added main() to app.py", "## Files changed (1)", "- `app.py`", "| secret scan | ✅ passed |",
                 f"| verify: {CHECK} | ✅ passed |", "| 1,200 | 340 | 50 | 7 | $0.0125 |",
                 f"[`work/collaboration/done/backend-dev/t-pr.yaml`]({github.web_url}/{GH_REPO}/blob/main/"
                 "work/collaboration/done/backend-dev/t-pr.yaml)", f"from commit {result['commit'][:12]}"):
        assert text in body, text
    rows = project.repo.rows("t-pr")
    assert rows[-1]["pr_url"] == result["pr_url"] and rows[-1]["commit_sha"] == result["commit"]
    assert all(request.authorized for request in github.requests)


def test_draft_from_config(project: Project, github: FakeGitHub) -> None:
    project.configure(draft=True)
    project.script("t-draft", WORK)
    project.repo.submit("t-draft", description="Add main")
    project.run()
    (pull,) = github.pulls_for(GH_REPO, "conveyor/t-draft")
    assert pull.draft is True and "partial" not in pull.labels
    assert project.repo.done_doc("t-draft")["result"]["publish"].endswith("opened draft pull request #1")


def test_a_rerun_after_a_crash_between_push_and_finish_finds_the_same_pull_request(
        project: Project, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)   # recovery reads the daemon's own environment
    project.script("t-again", WORK)
    project.repo.submit("t-again", description="Add main")
    project.run()
    first = project.repo.done_doc("t-again")["result"]
    _as_if_crashed_before_finishing(project, "t-again")

    project.run()

    again = project.repo.done_doc("t-again")["result"]
    assert again["pr_url"] == first["pr_url"] and again["commit"] == first["commit"]
    assert again["publish"] == "pushed to 'origin'; pull request #1 already existed (open)"
    assert len(creates(github)) == 1                                     # no second POST
    assert len(github.pulls(GH_REPO)) == 1
    assert len(project.invocations("t-again")) == 1                      # the agent did not run again


def test_recovery_publishes_a_commit_made_just_before_a_crash(project: Project, github: FakeGitHub,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash between commit and push: start-up recovery pushes and opens the pull request itself."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    project.repo.submit("t-crash", description="Add main", title="Add main")
    task_path = _claim_by_hand(project, "t-crash")
    message = commit_message(parse_task(task_path), kind="feat", tool="scripted", model="m1", cost=0.5,
                                        summary="Added main() before the crash",
                                        partial_reason="timeout: timed out after 60s")
    _commit_on_branch(project, "t-crash", {"app.py": "def main():\n    pass\n"}, message)

    project.run()

    document = project.repo.done_doc("t-crash")
    result = document["result"]
    (pull,) = github.pulls_for(GH_REPO, "conveyor/t-crash")
    assert (pull.title, pull.draft, "partial" in pull.labels) == ("[partial] Add main", True, True)
    assert "Added main() before the crash" in (pull.body or "")
    assert "published by start-up recovery" in (pull.body or "")
    assert result["pr_url"] == f"{github.web_url}/{GH_REPO}/pull/1"
    assert (result["artefacts"], result["partial"]) == (["app.py"], True)
    assert result["summary"] == "Added main() before the crash"
    assert project.remote_branches() == ["conveyor/t-crash", "main"]
    assert project.invocations("t-crash") == []


# ------------------------------------------------------------------ nowhere (or not allowed) to publish
def test_without_a_remote_the_branch_is_the_result(project: Project, github: FakeGitHub) -> None:
    project.repo.git("remote", "remove", "origin")
    project.script("t-local", WORK)
    project.repo.submit("t-local", description="Add main")
    project.run()
    result = project.repo.done_doc("t-local")["result"]
    assert (result["pr_url"], result["publish"]) == (None, "local branch only (no remote 'origin')")
    assert project.repo.git("rev-parse", "conveyor/t-local") == result["commit"]
    assert github.requests == []


def test_a_missing_token_pushes_the_branch_and_says_why_there_is_no_pull_request(project: Project,
                                                                                 github: FakeGitHub) -> None:
    project.script("t-notoken", WORK)
    project.repo.submit("t-notoken", description="Add main")
    project.run(token=False)
    result = project.repo.done_doc("t-notoken")["result"]
    assert result["pr_url"] is None
    assert result["publish"].startswith(f"pushed to 'origin'; no pull request opened: ${TOKEN_ENV} is not set")
    assert "conveyor/t-notoken" in project.remote_branches()
    assert github.requests == []


def test_github_failing_keeps_the_pushed_branch_and_says_so(project: Project, github: FakeGitHub) -> None:
    github.fail_next(422, method="POST", path_contains="/pulls", message="Repository rule violations found")
    project.script("t-refused", WORK)
    project.repo.submit("t-refused", description="Add main")
    project.run()
    document = project.repo.done_doc("t-refused")
    assert document["status"] == "done"
    assert document["result"]["pr_url"] is None
    assert "the pull request could not be opened" in document["result"]["publish"]
    assert "Repository rule violations found" in document["result"]["publish"]
    assert "conveyor/t-refused" in project.remote_branches()


def test_a_rejected_push_leaves_the_branch_local_and_says_so(project: Project, github: FakeGitHub) -> None:
    hook = project.origin / "hooks" / "pre-receive"   # type: ignore[operator]
    hook.write_text("#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    project.script("t-frozen", WORK)
    project.repo.submit("t-frozen", description="Add main")
    project.run()
    result = project.repo.done_doc("t-frozen")["result"]
    assert result["publish"].startswith("not pushed to 'origin' (") and "the branch stays local" in result["publish"]
    assert result["pr_url"] is None and github.requests == []
    assert project.repo.git("rev-parse", "conveyor/t-frozen") == result["commit"]


# ------------------------------------------------------------------ partial work
def test_a_timeout_after_changes_publishes_a_draft_partial_pull_request(project: Project,
                                                                        github: FakeGitHub) -> None:
    project.configure(verify=[CHECK])
    project.script("t-slow", [*work({"app.py": "def main():\n    ...\n"}), act("sleep", seconds=30)])
    project.repo.submit("t-slow", description="Add main", title="Add main", timeout_s=1)
    project.run()

    document = project.repo.done_doc("t-slow")
    result = document["result"]
    assert document["status"] == "done"
    assert result["partial"] is True and result["partial_reason"].startswith("timeout: ")
    (pull,) = github.pulls_for(GH_REPO, "conveyor/t-slow")
    assert (pull.title, pull.draft) == ("[partial] Add main", True)
    assert pull.labels == ("conveyor", "bot", "partial")
    assert "**Partial work.**" in (pull.body or "") and "| verify | ⏭️ skipped |" in (pull.body or "")
    trailer = cgit.trailer(project.repo.path, result["commit"], "Conveyor-Partial")
    assert trailer is not None and trailer.startswith("timeout: ")
    assert len(project.invocations("t-slow")) == 1                      # not retried (attempts: 2)
    assert [row["outcome"] for row in project.repo.rows("t-slow")] == ["timeout"]


def test_a_rate_limit_after_changes_keeps_the_work_as_partial(project: Project, github: FakeGitHub) -> None:
    project.script("t-limit", [*work({"app.py": "def main():\n    ...\n"}), act("api-error", status=429)])
    project.repo.submit("t-limit", description="Add main")
    project.run()
    result = project.repo.done_doc("t-limit")["result"]
    assert result["partial"] is True and result["partial_reason"].startswith("rate_limited: ")
    (pull,) = github.pulls_for(GH_REPO, "conveyor/t-limit")
    assert pull.draft is True and "partial" in pull.labels


def test_a_timeout_before_any_change_is_retried_not_published(project: Project, github: FakeGitHub) -> None:
    project.script("t-idle", [act("sleep", seconds=30)], [act("sleep", seconds=30)])
    project.repo.submit("t-idle", description="Add main", timeout_s=1)
    project.run()
    document = project.repo.done_doc("t-idle")
    assert document["status"] == "error" and document["error"]["kind"] == "timeout"
    assert len(project.invocations("t-idle")) == 2 and github.requests == []


def test_partial_work_still_goes_through_the_secret_scan(project: Project, github: FakeGitHub) -> None:
    token = "ghp" + "_" + "Zq8" * 12
    project.script("t-hot", [*work({"token.txt": token + "\n"}), act("sleep", seconds=30)])
    project.repo.submit("t-hot", description="Add main", timeout_s=1)
    project.run()
    error = project.repo.done_doc("t-hot")["error"]
    assert error["kind"] == "secrets" and "token.txt:1: GitHub Token" in error["message"]
    assert github.requests == [] and project.remote_branches() == ["main"]


# ------------------------------------------------------------------ helpers
def _as_if_crashed_before_finishing(project: Project, task_id: str) -> None:
    """Put a finished task back as the crash left it: in assigned/, in progress, no result."""
    done = project.repo.done_path(task_id)
    text = done.read_text(encoding="utf-8")
    head = text.split("\nresult:", 1)[0].replace("status: done", "status: in_progress")
    target = project.repo.board / "assigned" / "backend-dev" / done.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(head + "\n", encoding="utf-8")
    done.unlink()


def _claim_by_hand(project: Project, task_id: str) -> Path:
    source = project.repo.inbox / f"{task_id}.yaml"
    target = project.repo.board / "assigned" / "backend-dev" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    # claimed by a daemon on this host (issue 15: recovery resumes only its own claims)
    target.write_text(source.read_text().replace("status: new", "status: in_progress") + "attempt: 1\n"
                      + f"claimed_by: conveyor@{socket.gethostname()}:1\n")
    source.unlink()
    return target


def _commit_on_branch(project: Project, task_id: str, files: dict[str, str], message: str) -> None:
    worktree = project.repo.path.parent / f"wt-{task_id}"
    project.repo.git("worktree", "add", "-q", "-b", f"conveyor/{task_id}", str(worktree), "main")
    for name, text in files.items():
        (worktree / name).write_text(text)
    project.repo.git("-C", str(worktree), "add", "-A")
    project.repo.git("-C", str(worktree), "commit", "-q", "-m", message)
    project.repo.git("worktree", "remove", "--force", str(worktree))


def test_a_verify_command_that_cannot_be_split_is_a_config_error(project: Project) -> None:
    project.repo.write_config("daemon.yaml", daemon_yaml(remote="origin", verify=["make test", "pytest -k 'oops"]))
    with pytest.raises(ConfigError) as caught:
        project.repo.config()
    (problem,) = caught.value.problems
    assert "verify" in (problem.field or "") and "close the quotes" in problem.message


# ------------------------------------------------------------------ publishing never fails finished work
def _pending(project: Project, task_id: str) -> dict[str, Any]:
    document = project.repo.done_doc(task_id)
    assert document["status"] == "done", document.get("error")
    return dict(document["result"])


def test_a_github_outage_after_the_push_leaves_the_task_done_and_a_retry_opens_the_pull_request(
        project: Project, github: FakeGitHub) -> None:
    github.fail_next(502, method="POST", path_contains="/pulls")
    project.script("t-outage", WORK)
    project.repo.submit("t-outage", description="Add main")
    project.run()

    result = _pending(project, "t-outage")
    assert result["publish_pending"] == "pull_request" and result["pr_url"] is None
    assert "conveyor/t-outage" in project.remote_branches()
    status = collect_status(project.repo.config(), time.time())
    assert [(row["id"], row["pending"]) for row in status.pending_publications] == [("t-outage", "pull_request")]

    github.fail_next(502, method="POST", path_contains="/pulls")   # still down at the first retry
    assert retry_publications(project.repo.config(), {TOKEN_ENV: TOKEN}) == []
    assert _pending(project, "t-outage")["publish_pending"] == "pull_request"

    project.run()                                                     # a restart retries at once
    result = _pending(project, "t-outage")
    (pull,) = github.pulls_for(GH_REPO, "conveyor/t-outage")
    assert "publish_pending" not in result and result["pr_url"].endswith(f"/pull/{pull.number}")
    assert "opened pull request" in result["publish"]
    assert collect_status(project.repo.config(), time.time()).pending_publications == []


def test_an_answer_the_client_cannot_read_is_not_an_internal_error_and_the_retry_finds_the_pull_request(
        project: Project, github: FakeGitHub) -> None:
    github.drop_from_next("number", "html_url", "url", "state", method="POST", path_contains="/pulls")
    project.script("t-garbled", WORK)
    project.repo.submit("t-garbled", description="Add main")
    project.run()

    result = _pending(project, "t-garbled")
    assert result.get("publish_pending") == "pull_request", (result["publish"], result["pr_url"])
    assert "could not be" in result["publish"]
    assert retry_publications(project.repo.config(), {TOKEN_ENV: TOKEN}) == ["t-garbled"]
    (pull,) = github.pulls_for(GH_REPO, "conveyor/t-garbled")          # found by head branch, not opened twice
    result = _pending(project, "t-garbled")
    assert "publish_pending" not in result and result["pr_url"].endswith(f"/pull/{pull.number}")
    assert f"pull request #{pull.number} already existed" in result["publish"]


def test_a_person_stops_the_retries(project: Project, github: FakeGitHub) -> None:
    github.fail_next(503, method="POST", path_contains="/pulls")
    project.script("t-stop", WORK)
    project.repo.submit("t-stop", description="Add main")
    project.run()
    path = project.repo.path / "work" / "collaboration" / "done" / "backend-dev" / "t-stop.yaml"
    document = yaml.safe_load(path.read_text())
    document["result"]["publish_stop"] = True
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    before = len(github.requests)
    assert retry_publications(project.repo.config(), {TOKEN_ENV: TOKEN}) == []
    assert len(github.requests) == before and github.pulls_for(GH_REPO, "conveyor/t-stop") == []
