"""Compatibility with a real board (186 files written by people): validation never crashes and names the
bad file's line; the valid inbox tasks run; the authors' extra keys survive and reach the agent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.board.validate import collect, validate_file
from conveyor.core import yamlio
from tests.conftest import FIXTURES
from tests.integration.conftest import Repo

WRITE_ONE = '[{"do": "write", "path": "fake/{task}.txt"}]'     # what the agent does for a task of the seed board

SEED = FIXTURES / "seed-board"
BROKEN = "2026-02-12T1102-manager-mike-task-assignment.yaml"
DEPENDENCIES = ("2026-02-13T1000-m61-jsonl-event-writer", "2026-02-11T1100-adr045-task5-dashboard-integration")
VALID_INBOX = {
    "2025-11-23T2134-curator-add-github-issue-type-for-orch-task": ("curator", ".yml"),
    "2026-02-12T1101-planning-petra-roadmap-update": ("planning-petra", ".yaml"),
    "2026-02-13T1002-m61-query-service-facade": ("python-pedro", ".yaml"),
    "2026-02-13T1003-m61-dashboard-initiative-frontend": ("frontend", ".yaml"),
}
DAEMON_KEYS = {"status", "assigned_at", "started_at", "completed_at", "claimed_by", "attempt", "result", "error"}


def copy_board(source: Path, target: Path) -> None:
    """Copy (part of) the read-only fixture and make the copy writable; the fixture itself is never touched.

    The copies are dated a minute back, as files that have been on a board a while are: an unreadable file
    written a moment ago is given two seconds to settle, which would only slow these tests down.
    """
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        settled = time.time() - 60
        os.utime(target, (settled, settled))
        return
    shutil.copytree(source, target, dirs_exist_ok=True, copy_function=shutil.copyfile)
    settled = time.time() - 60
    for root, dirs, files in os.walk(target):
        for name in dirs + files:
            path = Path(root) / name
            path.chmod(path.stat().st_mode | 0o200)
            if name in files:
                os.utime(path, (settled, settled))
    target.chmod(target.stat().st_mode | 0o200)


def load(path: Path) -> dict[str, Any]:
    document = yamlio.loads(path.read_bytes())
    assert isinstance(document, dict)
    return document


def test_the_fixture_is_what_we_think_it_is() -> None:
    files = [p for p in SEED.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml")]
    assert len(files) == 186
    assert (SEED / "inbox" / BROKEN).is_file()


def test_validating_every_file_never_crashes_and_explains_every_failure() -> None:
    files = collect([SEED])
    assert len(files) == 186
    reports = [validate_file(path) for path in files]
    failed = {report.path.name: report for report in reports if not report.ok}
    assert BROKEN in failed
    (problem,) = failed[BROKEN].errors
    assert problem.line == 33 and "not valid YAML" in problem.message and problem.fix
    for report in reports:
        for problem in report.errors + report.warnings:
            assert problem.file == str(report.path)
            assert problem.message and problem.fix, problem
    mismatched = [name for name, report in failed.items() if any(p.field == "id" for p in report.errors)]
    assert len(mismatched) == 6       # the fixture's README: 6 files whose id differs from the file name
    assert len(reports) - len(failed) >= 175


def test_task_validate_cli_over_the_whole_board(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "conveyor", "task", "validate", "--quiet", str(SEED)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 1, done.stderr                     # invalid files exist: exit 1, not a crash
    assert "Traceback" not in done.stderr
    assert done.stdout.splitlines()[-1].startswith("186 file(s): ")
    assert f"FAIL  {SEED / 'inbox' / BROKEN}" in done.stdout
    assert f"error: {SEED / 'inbox' / BROKEN}:33: is not valid YAML" in done.stdout


def copy_inbox(repo: Repo) -> None:
    """The inbox, and the finished tasks one of its tasks depends on (`dependencies: [{task_id: ...}]`, read
    since issue 15): on the real board they sit, `status: done`, in assigned/python-pedro/."""
    copy_board(SEED / "inbox", repo.inbox)
    for name in DEPENDENCIES:
        copy_board(SEED / "assigned" / "python-pedro" / f"{name}.yaml",
                   repo.board / "assigned" / "python-pedro" / f"{name}.yaml")


def test_inbox_tasks_run_keep_their_keys_and_reach_the_agent(repo: Repo) -> None:
    copy_inbox(repo)
    originals = {task_id: load(SEED / "inbox" / f"{task_id}{suffix}")
                 for task_id, (_agent, suffix) in VALID_INBOX.items()}
    run = repo.run_once(env={"FAKE_AGENT_DEFAULT": WRITE_ONE})
    assert run.code == 0
    for task_id, (agent, suffix) in VALID_INBOX.items():
        final_path = repo.board / "done" / agent / f"{task_id}{suffix}"
        final = load(final_path)
        original = originals[task_id]
        assert final["status"] == "done", final.get("error")
        result = final["result"]
        assert result["branch"] == f"conveyor/{task_id}" and result["commit"]
        assert result["artefacts"] == [f"fake/{task_id}.txt"]
        assert repo.git("rev-parse", f"conveyor/{task_id}") == result["commit"]
        # every key the author wrote survives unchanged, in the author's order
        assert list(final)[:len(original)] == list(original)
        for key, value in original.items():
            if key not in DAEMON_KEYS:
                assert final[key] == value, key
    rejected = repo.rejected_report(BROKEN)
    assert rejected["problems"][0]["line"] == 33
    assert (repo.rejected / BROKEN).read_bytes() == (SEED / "inbox" / BROKEN).read_bytes()
    assert sorted(p.name for p in repo.inbox.iterdir()) == [".gitkeep"]


def test_the_authors_work_keys_are_in_the_prompt(repo: Repo) -> None:
    copy_inbox(repo)
    repo.run_once()
    petra = repo.agent_prompt("2026-02-12T1101-planning-petra-roadmap-update")
    assert "## Acceptance criteria\n- ROADMAP.md updated with Agent Specialization Hierarchy initiative" in petra
    assert "## Requirements\nroadmap_integration:" in petra
    assert "Total implementation effort: 54-68 hours across 6 phases" in petra      # from context.background
    facade = repo.agent_prompt("2026-02-13T1002-m61-query-service-facade")
    assert "Extract read-side query logic from dashboard route handlers" in facade   # description
    assert "## Specification\nspecifications/initiatives/control-plane/SPEC-CTRL-001" in facade
    assert "- [ ] QueryService is read-only (no state mutation)" in facade
    curator = repo.agent_prompt("2025-11-23T2134-curator-add-github-issue-type-for-orch-task")
    assert "## Notes\n- Read the existing orchestration design document" in curator
    assert "- docs/HOW_TO_USE/multi-agent-orchestration.md" in curator
    assert "sddevelopment-be/quickstart_agent-augmented-development" not in curator   # context.repo is ours


@pytest.mark.slow
def test_the_whole_board_through_the_daemon(repo: Repo) -> None:
    """Everything at once: tasks assigned in assigned/ run (or wait for their dependencies), settled and
    foreign ones stay byte-identical (issue 15: `done`, `blocked`, `pending` and someone else's `in_progress`
    files there used to be run), unreadable ones are rejected; the daemon finishes the run."""
    copy_board(SEED, repo.board)
    before_done = {p.relative_to(repo.board): p.read_bytes() for p in (repo.board / "done").rglob("*.y*ml")}
    claimed = {path: (load(path), path.read_bytes()) for path in sorted((repo.board / "assigned").rglob("*.y*ml"))}
    assert len(claimed) == 47
    run = repo.run_once(env={"FAKE_AGENT_DEFAULT": WRITE_ONE})
    assert run.code == 0
    archived = {p.name: p for p in (repo.board / "archive").rglob("*.y*ml")}
    for relative, data in before_done.items():     # finished tasks are never rewritten (old ones may be archived)
        path = repo.board / relative
        assert (path if path.exists() else archived[path.name]).read_bytes() == data
    for task_id, (agent, suffix) in VALID_INBOX.items():
        assert load(repo.board / "done" / agent / f"{task_id}{suffix}")["status"] == "done"
    rejected = {p.name for p in repo.rejected.iterdir() if not p.name.endswith(".error.yaml")}
    assert BROKEN in rejected
    ran = waiting = 0
    for path, (original, data) in claimed.items():
        finished = repo.board / "done" / str(original["agent"]) / path.name
        if path.name in rejected:
            assert repo.rejected_report(path.name)["problems"][0]["field"] == "id"
        elif original.get("status") not in ("assigned", "new"):
            assert path.read_bytes() == data, path           # settled or someone else's: untouched
        elif finished.exists():
            assert load(finished)["status"] == "done"
            ran += 1
        else:                                               # waits for a dependency that is not done
            assert path.read_bytes() == data                 # left as assigned until it may start
            waiting += 1
    assert len(rejected & {p.name for p in claimed}) == 5
    assert ran + waiting == 32 and ran > 20
    assert repo.worktrees() == [str(repo.path)]
