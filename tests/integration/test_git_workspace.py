"""Workspaces, branches and commits with real git: one workspace per task, always removed; hooks never run."""

from __future__ import annotations

import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conveyor.core.errors import GitError
from conveyor.workspace import git as cgit
from conveyor.workspace import task_workspace
from tests.conftest import git
from tests.integration.conftest import DAEMON_YAML, Repo

HOOK = """#!/bin/sh
echo "$0 ran" >> "{marker}"
exit 1
"""


def assert_no_worktrees_left(repo: Repo) -> None:
    assert repo.worktrees() == [str(repo.path)]
    assert not repo.worktrees_dir.exists() or list(repo.worktrees_dir.iterdir()) == []


# ------------------------------------------------------------------ the worktree always goes
def test_success_commits_on_the_task_branch_and_removes_the_worktree(repo: Repo) -> None:
    repo.submit("t-ok", description="FAKE write src/hello.txt hello from the agent")
    repo.run_once()
    result = repo.done_doc("t-ok")["result"]
    assert result["branch"] == "conveyor/t-ok"
    assert result["artefacts"] == ["src/hello.txt"]
    assert repo.git("rev-parse", "conveyor/t-ok") == result["commit"]
    assert repo.git("show", "conveyor/t-ok:src/hello.txt") == "hello from the agent"
    assert repo.git("rev-parse", "conveyor/t-ok~1") == repo.git("rev-parse", "main")
    assert not (repo.path / "src").exists()                 # the user's working tree is untouched
    assert_no_worktrees_left(repo)
    # the agent ran inside the task's worktree, outside the working tree
    assert repo.agent.last("t-ok")["cwd"] == str(repo.worktrees_dir / "t-ok")


@pytest.mark.parametrize(("directive", "kind"), [
    ("FAKE write half.txt partial\nFAKE exit 3", "crashed"),
    ("FAKE write half.txt partial\nFAKE kill", "crashed"),
])
def test_failure_and_crash_remove_the_worktree(repo: Repo, directive: str, kind: str) -> None:
    repo.submit("t-bad", description=directive)
    repo.run_once()
    document = repo.done_doc("t-bad")
    assert document["status"] == "error"
    assert document["error"]["kind"] == kind
    assert_no_worktrees_left(repo)
    assert "conveyor/t-bad" not in repo.branches(), "a failed task must not leave an empty branch behind"


def test_timeout_kills_the_agent_and_removes_the_worktree(repo: Repo) -> None:
    repo.submit("t-slow", description="FAKE sleep 30", timeout_s=1)   # with changes it would be partial work
    repo.run_once()
    document = repo.done_doc("t-slow")
    assert document["status"] == "error"
    assert document["error"]["kind"] == "timeout"
    assert document["error"]["message"].startswith("timed out")
    assert repo.rows("t-slow")[0]["outcome"] == "timeout"
    assert_no_worktrees_left(repo)


def test_no_changes_finishes_done_without_a_branch(repo: Repo) -> None:
    repo.submit("t-noop", description="FAKE say looked around, all fine", expect_changes=False)
    repo.run_once()
    document = repo.done_doc("t-noop")
    assert document["status"] == "done"
    assert document["result"]["summary"] == "no changes"
    assert document["result"]["branch"] is None and document["result"]["commit"] is None
    assert document["result"]["agent_summary"] == "fake agent: looked around, all fine"
    assert "conveyor/t-noop" not in repo.branches()
    assert_no_worktrees_left(repo)


def test_ignored_files_do_not_count_as_changes(repo: Repo) -> None:
    (repo.path / ".gitignore").write_text((repo.path / ".gitignore").read_text() + "build/\n")
    repo.git("commit", "-q", "-am", "ignore build/")
    repo.submit("t-ignored", description="FAKE write build/out.bin junk", expect_changes=False)
    repo.run_once()
    assert repo.done_doc("t-ignored")["result"]["summary"] == "no changes"
    assert "conveyor/t-ignored" not in repo.branches()


# ------------------------------------------------------------------ the commit
def test_commit_message_and_trailers(repo: Repo) -> None:
    repo.submit("t-msg", description="FAKE write a.txt x", title="Add   the a.txt\nfile")
    repo.run_once()
    message = repo.git("log", "-1", "--format=%B", "conveyor/t-msg")
    lines = message.splitlines()
    assert lines[0] == "feat(backend-dev): Add the a.txt file"
    assert "fake agent: wrote a.txt" in message
    trailers = repo.git("log", "-1", "--format=%(trailers:only,unfold)", "conveyor/t-msg").splitlines()
    assert trailers == ["Conveyor-Task: t-msg", "Agent: backend-dev", "Tool: fake", "Model: default",
                        "Cost-USD: 0.0000"]
    assert repo.git("log", "-1", "--format=%an <%ae>|%cn <%ce>", "conveyor/t-msg") == \
        "Conveyor <conveyor@localhost>|Conveyor <conveyor@localhost>"
    assert cgit.find_task_commit(repo.path, "conveyor/t-msg", "t-msg") == repo.git("rev-parse", "conveyor/t-msg")


def test_commit_type_model_and_cost_from_a_json_cli(repo: Repo) -> None:
    repo.submit("t-json", agent="json-agent", description="FAKE write j.txt x")
    repo.run_once()
    subject = repo.git("log", "-1", "--format=%s", "conveyor/t-json")
    assert subject == "fix(json-agent): Title of t-json"         # commit_type from agents.yaml
    trailers = repo.git("log", "-1", "--format=%(trailers:only,unfold)", "conveyor/t-json").splitlines()
    assert "Model: fake-model-1" in trailers and "Cost-USD: 0.0125" in trailers and "Tool: fake-claude" in trailers


def test_the_tasks_type_overrides_the_commit_type(repo: Repo) -> None:
    repo.submit("t-docs", description="FAKE write doc.md x", type="docs")
    repo.run_once()
    assert repo.git("log", "-1", "--format=%s", "conveyor/t-docs").startswith("docs(backend-dev): ")


def test_repository_hooks_never_run(repo: Repo) -> None:
    marker = repo.path.parent / "hooks-ran.txt"
    hooks = repo.git_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("pre-commit", "commit-msg", "post-commit", "post-checkout", "prepare-commit-msg",
                 "reference-transaction"):
        hook = hooks / name
        hook.write_text(HOOK.format(marker=marker))
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    repo.submit("t-hooks", description="FAKE write a.txt x")
    repo.submit("t-hooks-noop", description="nothing", expect_changes=False)
    repo.run_once()
    assert repo.done_doc("t-hooks")["result"]["commit"]
    assert repo.done_doc("t-hooks-noop")["result"]["summary"] == "no changes"
    assert not marker.exists(), marker.read_text()


def test_a_dirty_user_tree_and_another_checked_out_branch_do_not_matter(repo: Repo) -> None:
    main_sha = repo.git("rev-parse", "main")
    repo.git("checkout", "-q", "-b", "feature")
    (repo.path / "README.md").write_text("user's unsaved work\n")
    (repo.path / "scratch.txt").write_text("untracked\n")
    repo.submit("t-base", description="FAKE write a.txt x")
    repo.run_once()
    assert repo.git("rev-parse", "conveyor/t-base~1") == main_sha   # branched from main, not feature
    assert (repo.path / "README.md").read_text() == "user's unsaved work\n"
    assert (repo.path / "scratch.txt").read_text() == "untracked\n"
    assert repo.git("branch", "--show-current") == "feature"


def test_context_branch_chooses_the_base(repo: Repo) -> None:
    repo.git("branch", "release")
    (repo.path / "only-on-main.txt").write_text("x\n")
    repo.git("add", "only-on-main.txt")
    repo.git("commit", "-q", "-m", "main moves on")
    repo.submit("t-rel", description="FAKE write a.txt x", context={"branch": "release"})
    repo.run_once()
    assert repo.git("rev-parse", "conveyor/t-rel~1") == repo.git("rev-parse", "release")


def test_a_missing_configured_base_branch_keeps_the_task_waiting_with_the_fix(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("base_branch: main", "base_branch: does-not-exist"))
    repo.submit("t-nobase", description="FAKE write a.txt x")
    run = repo.run_once()
    assert (repo.inbox / "t-nobase.yaml").exists()        # not claimed, not failed
    state = (repo.git_dir / "conveyor" / "status.json").read_text()
    assert "does-not-exist" in state and "git branch does-not-exist" in state
    assert run.code == 0


def test_a_context_branch_this_repository_lacks_starts_from_the_base_and_says_so(repo: Repo) -> None:
    """Issue 15: such a task used to wait for ever with a fix ("set base_branch") that did not help."""
    repo.submit("t-nobase", description="FAKE write a.txt x", context={"branch": "does-not-exist"})
    run = repo.run_once()
    result = repo.done_doc("t-nobase")["result"]
    assert "does-not-exist" in result["base_branch_note"]
    assert repo.git("rev-parse", "conveyor/t-nobase~1") == repo.git("rev-parse", "main")
    assert run.code == 0


def test_a_leftover_branch_from_an_earlier_run_is_reset_to_the_base(repo: Repo) -> None:
    repo.git("branch", "conveyor/t-again", "main")
    repo.git("worktree", "add", "-q", str(repo.path.parent / "stale"), "conveyor/t-again")
    (repo.path.parent / "stale" / "junk.txt").write_text("stale\n")
    repo.git("-C", str(repo.path.parent / "stale"), "add", "junk.txt")
    repo.git("-C", str(repo.path.parent / "stale"), "commit", "-q", "-m", "stale")
    repo.git("worktree", "remove", "--force", str(repo.path.parent / "stale"))
    repo.submit("t-again", description="FAKE write a.txt x")
    repo.run_once()
    assert repo.git("rev-parse", "conveyor/t-again~1") == repo.git("rev-parse", "main")


# ------------------------------------------------------------------ the git module's own promises
def test_git_errors_are_sentences(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not a git repository"):
        cgit.run(tmp_path, "status")
    with pytest.raises(GitError, match="the folder is missing"):   # never run in the daemon's own folder
        cgit.run(tmp_path / "gone", "status")
    with pytest.raises(GitError, match="not inside a git repository"):
        cgit.repo_root(tmp_path)
    with pytest.raises(GitError, match=r"not inside a git repository \(No such file"):
        cgit.repo_root(tmp_path / "missing")
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "bare.git")], check=True)
    with pytest.raises(GitError, match="is a bare repository; Conveyor needs a working tree"):
        cgit.repo_root(tmp_path / "bare.git")


def test_repo_root_and_common_dir_answer_from_a_subfolder_and_a_linked_worktree(repo: Repo) -> None:
    (repo.path / "sub").mkdir()
    assert cgit.repo_root(repo.path / "sub") == repo.path
    linked = repo.path.parent / "linked"
    repo.git("worktree", "add", "-q", "-b", "side", str(linked), "main")
    assert cgit.repo_root(linked) == linked
    assert cgit.common_git_dir(linked) == repo.git_dir


def test_base_not_ready_explains_a_missing_branch_and_a_rebase(repo: Repo) -> None:
    assert cgit.base_not_ready(repo.path, "main", repo.git_dir) is None
    assert "git branch nope" in (cgit.base_not_ready(repo.path, "nope", repo.git_dir) or "")
    (repo.git_dir / "rebase-merge").mkdir()
    (repo.git_dir / "rebase-merge" / "head-name").write_text("refs/heads/main\n")
    assert "being rebased" in (cgit.base_not_ready(repo.path, "main", repo.git_dir) or "")


def test_push_refuses_anything_but_task_branches(repo: Repo) -> None:
    with pytest.raises(GitError, match="only conveyor/"):
        cgit.push(repo.path, "origin", "main")


def test_remove_worktree_tolerates_a_half_gone_legacy_worktree(repo: Repo) -> None:
    """Linked worktrees are what builds before task workspaces left behind; the reaper still removes them."""
    path = repo.worktrees_dir / "half"
    repo.git("worktree", "add", "-q", "-b", "conveyor/half", str(path), "main")
    (path / ".git").unlink()
    cgit.remove_worktree(repo.path, path)
    assert not path.exists()
    assert str(path) not in repo.worktrees()
    cgit.remove_worktree(repo.path, path)  # and again: nothing left to remove is fine


def _workspace(repo: Repo, name: str) -> task_workspace.Workspace:
    config = repo.config()
    return task_workspace.create(repo.path, repo.git_dir, config.worktrees_dir / name,
                                 task_workspace.view_dir(config.state_dir, name), f"conveyor/{name}", "main")


def test_a_workspace_is_a_repository_of_its_own_borrowing_the_users_objects(repo: Repo) -> None:
    workspace = _workspace(repo, "own")
    own = workspace.path / ".git"
    assert own.is_dir() and (own / "objects" / "info" / "alternates").read_text().strip() == \
        str((repo.git_dir / "objects").resolve())
    assert git(workspace.path, "rev-parse", "--abbrev-ref", "HEAD") == "conveyor/own"
    assert git(workspace.path, "rev-parse", "HEAD") == repo.git("rev-parse", "main")
    assert git(workspace.path, "status", "--porcelain") == ""           # the copied index matches the files
    assert git(workspace.path, "rev-parse", "--git-common-dir") == ".git"  # not the user's .git
    assert repo.worktrees() == [str(repo.path)]                         # no linked worktree registered
    assert "conveyor/own" not in repo.branches()                        # the branch appears with the commit
    assert stat.S_IMODE(workspace.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(workspace.view.stat().st_mode) == 0o700
    task_workspace.remove(workspace.path, workspace.view)
    assert not workspace.path.exists() and not workspace.view.exists()


def test_remove_takes_whatever_the_agent_left(repo: Repo) -> None:
    workspace = _workspace(repo, "locked")
    locked = workspace.path / "locked" / "deeper"
    locked.mkdir(parents=True)
    (locked / "f.txt").write_text("x\n")
    locked.chmod(0o500)
    (workspace.path / "locked").chmod(0o500)
    (workspace.path / "link-out").symlink_to(repo.path)
    task_workspace.remove(workspace.path, workspace.view)
    assert not workspace.path.exists()
    assert (repo.path / "README.md").exists()          # a symlink out is removed, not followed


def test_a_missing_or_replaced_workspace_is_never_looked_at(repo: Repo, tmp_path: Path) -> None:
    workspace = _workspace(repo, "gone")
    (workspace.path / "a.txt").write_text("x\n")
    task_workspace.remove(workspace.path, tmp_path / "unused")
    with pytest.raises(task_workspace.WorkspaceGone, match="is gone"):
        task_workspace.stage(workspace)
    workspace.path.symlink_to(repo.path)          # the user's checkout in its place
    with pytest.raises(task_workspace.WorkspaceGone, match="was replaced"):
        task_workspace.stage(workspace)
    assert not (repo.path / ".git" / "index.lock").exists()
    assert repo.git("status", "--porcelain") == ""   # nothing of the user's was staged


def test_parallel_workers_can_create_and_remove_workspaces_at_once(repo: Repo) -> None:
    errors: list[Exception] = []

    def churn(worker: int) -> None:
        for _ in range(6):
            try:
                workspace = _workspace(repo, f"w{worker}")
                task_workspace.remove(workspace.path, workspace.view)
            except GitError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=churn, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_no_worktrees_left(repo)
