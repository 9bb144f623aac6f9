"""Working beside the file-based workflow the board comes from (issue 15), on copies of its real board: what is
settled stays settled, what its orchestrator assigns runs, and the files Conveyor writes pass its validator's
rules (tests/support/workflow_rules.py)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from conveyor.board.layout import BoardLayout
from conveyor.core import yamlio
from conveyor.core.state_files import STATUS_FILE
from conveyor.core.timeutil import utc_iso
from conveyor.pipeline import recovery
from conveyor.telemetry.store import Telemetry
from tests.conftest import FIXTURES
from tests.integration.conftest import DAEMON_YAML, Repo
from tests.integration.daemon_process import running_daemon
from tests.integration.test_seed_board import copy_board
from tests.support.waiting import wait_for
from tests.support.workflow_rules import violations

SEED = FIXTURES / "seed-board"
AGENT = "backend-dev"
SETTLED = ("done", "error", "blocked")
OURS = f"conveyor@{socket.gethostname()}:4242"


def load(path: Path) -> dict[str, Any]:
    document = yamlio.loads(path.read_bytes())
    assert isinstance(document, dict)
    return document


def untouchable(board: Path) -> dict[Path, bytes]:
    """Every settled file and every in_progress file Conveyor did not claim, anywhere on the board."""
    found = {}
    for path in sorted(board.rglob("*.y*ml")):
        try:
            document = load(path)
        except (AssertionError, yamlio.YamlProblem):
            continue
        status = str(document.get("status") or "")
        foreign = status == "in_progress" and not str(document.get("claimed_by") or "").startswith("conveyor@")
        if status in SETTLED or foreign:
            found[path] = path.read_bytes()
    return found


def running_ids(repo: Repo) -> list[str]:
    """The tasks the daemon's status snapshot says it runs (`?` while there is none to read)."""
    try:
        snapshot = json.loads((repo.config().state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return ["?"]
    return [entry["id"] for entry in snapshot.get("running", [])]


def put_assigned(repo: Repo, task_id: str, agent: str = AGENT, **fields: Any) -> Path:
    """Assign a task the way the workflow's orchestrator does: written elsewhere, renamed into place."""
    folder = repo.board / "assigned" / agent
    folder.mkdir(parents=True, exist_ok=True)
    staging = repo.path.parent / "staging"
    staging.mkdir(exist_ok=True)
    temp = staging / f"{task_id}.yaml"
    temp.write_text(repo.task_text(task_id, agent, **fields), encoding="utf-8")
    target = folder / temp.name
    os.replace(temp, target)
    return target


# ------------------------------------------------------------------ 1. settled is settled
def test_recovery_over_the_whole_seed_board_leaves_settled_and_foreign_work_byte_identical(repo: Repo) -> None:
    copy_board(SEED, repo.board)
    before = untouchable(repo.board)
    statuses = sorted(str(load(p).get("status")) for p in before)
    assert statuses.count("done") > 100 and statuses.count("blocked") == 2 and statuses.count("in_progress") == 1
    config = repo.config()
    outcome = recovery.recover(config, BoardLayout(config.board_root), Telemetry(config.telemetry_db), time.time,
                               dict(os.environ))
    for path, data in before.items():
        assert path.read_bytes() == data, path
    # what recovery hands on to run: exactly the seed's `status: assigned` files (the five `new` ones carry an
    # id that differs from their file name and are rejected, to _rejected/ outside done/)
    ready = {task.id for task in outcome.ready}
    assigned = {p.stem for p in (repo.board / "assigned").rglob("*.y*ml") if load(p).get("status") == "assigned"}
    assert ready == assigned and len(ready) == 32
    assert outcome.finished == []
    assert len([p for p in (repo.board / "_rejected").iterdir() if p.name.endswith(".error.yaml")]) == 5
    assert not (repo.board / "done" / "_rejected").exists()


def test_an_errored_task_waits_for_a_person_and_runs_when_set_back_to_assigned(repo: Repo) -> None:
    error = {"message": "the agent gave up", "timestamp": "2026-02-11T10:00:00Z"}
    path = put_assigned(repo, "errored", description="FAKE write a.txt fixed", status="error", error=error)
    before = path.read_bytes()
    repo.run_once()
    assert path.read_bytes() == before and not (repo.out / "errored.prompt").exists()
    # the documented retry: a person sets the status back to `assigned`
    path.write_text(before.decode().replace("status: error", "status: assigned"), encoding="utf-8")
    repo.run_once()
    document = repo.done_doc("errored")
    assert document["status"] == "done" and "error" not in document
    assert document["previous_errors"] == [error]
    assert violations(document, "errored") == []


def test_blocked_and_someone_elses_in_progress_tasks_are_not_run(repo: Repo) -> None:
    blocked = put_assigned(repo, "blocked", description="FAKE write a.txt x", status="blocked")
    theirs = put_assigned(repo, "theirs", description="FAKE write b.txt x", status="in_progress",
                          started_at="2026-02-11T10:00:00Z", claimed_by="python-pedro")
    unclaimed = put_assigned(repo, "unclaimed", description="FAKE write c.txt x", status="in_progress")
    before = {p: p.read_bytes() for p in (blocked, theirs, unclaimed)}
    run = repo.run_once()
    assert {p: p.read_bytes() for p in before} == before
    assert not any((repo.out / f"{name}.prompt").exists() for name in ("blocked", "theirs", "unclaimed"))
    assert run.events("recovery.requeued") == []


# ------------------------------------------------------------------ 3. the lifecycle and its keys
def test_a_finished_task_carries_the_workflows_lifecycle_and_metrics_keys(repo: Repo) -> None:
    repo.submit("lifecycle", description="FAKE write a.txt x")
    repo.run_once()
    document = repo.done_doc("lifecycle")
    assert violations(document, "lifecycle") == []
    for key in ("assigned_at", "started_at", "completed_at"):
        assert document[key].endswith("Z"), key
    result = document["result"]
    assert result["completed_at"] == document["completed_at"]
    metrics = result["metrics"]
    assert isinstance(metrics["duration_minutes"], float | int)
    assert set(metrics["token_count"]) == {"input", "output", "total"}
    assert metrics["token_count"]["total"] == metrics["token_count"]["input"] + metrics["token_count"]["output"]
    failed = repo.submit("failing", description="FAKE exit 3")
    assert failed.exists()
    repo.run_once()
    assert violations(repo.done_doc("failing"), "failing") == []


def test_a_missing_login_waits_in_assigned_as_status_assigned_and_runs_once_it_exists(repo: Repo) -> None:
    """Tried as a new user would: no login. The task waits (the held reason names the login), claimed the way
    the workflow's tools expect, and runs once the login exists, without a restart of the set-up."""
    home = repo.path.parent / "home"
    home.mkdir()
    tools = (repo.path / "config" / "tools.yaml").read_text(encoding="utf-8")
    login = '    credentials_files: ["~/.fake-login.json"]\n'
    tools = tools.replace("    parser: text\n", "    parser: text\n" + login, 1)
    assert "fake-login" in tools
    repo.write_config("tools.yaml", tools)
    repo.submit("needs-login", description="FAKE write a.txt x")
    run = repo.run_once(env={"HOME": str(home)})
    claimed = repo.board / "assigned" / AGENT / "needs-login.yaml"
    document = load(claimed)
    assert (document["status"], document["assigned_at"].endswith("Z")) == ("assigned", True)
    held = run.events("task.held")
    assert held and "not logged in" in held[0]["reason"] and ".fake-login.json" in held[0]["reason"]
    assert not repo.done_path("needs-login").exists()
    (home / ".fake-login.json").write_text("{}", encoding="utf-8")
    repo.run_once(env={"HOME": str(home)})
    assert repo.done_doc("needs-login")["status"] == "done"


# ------------------------------------------------------------------ 5. dependencies where the template puts them
def test_context_dependencies_hold_a_task_whose_dependency_failed(repo: Repo) -> None:
    failed = repo.board / "done" / AGENT
    failed.mkdir(parents=True)
    (failed / "upstream.yaml").write_text(repo.task_text(
        "upstream", status="error", error={"message": "no"}), encoding="utf-8")
    put_assigned(repo, "downstream", description="FAKE write a.txt x", status="assigned",
                 context={"branch": "main", "dependencies": ["upstream"]})
    mapped = {"prerequisites": ["Hugo installed locally"], "requires": [{"task_id": "upstream"}]}
    repo.submit("mapped", description="FAKE write b.txt x", dependencies=mapped)
    repo.run_once()
    assert not (repo.out / "downstream.prompt").exists() and not (repo.out / "mapped.prompt").exists()
    assert load(repo.inbox / "mapped.yaml")["dependencies"] == mapped      # accepted, not rejected


# ------------------------------------------------------------------ 7. rejections outside what CI validates
def test_rejections_go_beside_the_four_folders_not_under_done(repo: Repo) -> None:
    repo.drop("broken.yaml", "id: broken\nagent: [\n")
    repo.run_once()
    assert (repo.board / "_rejected" / "broken.yaml").exists()
    assert (repo.board / "_rejected" / "broken.yaml.error.yaml").exists()
    assert not (repo.board / "done" / "_rejected").exists()


# ------------------------------------------------------------------ 8. context.branch
def test_a_context_branch_this_repository_lacks_falls_back_to_the_base_and_says_so(repo: Repo) -> None:
    """The seed board's blocked task names `copilot/post-implementation-analysis-enhancements`; the upstream
    template's context.branch names the branch of `context.repo`, which need not be this repository."""
    repo.submit("elsewhere", description="FAKE write a.txt x",
                context={"repo": "owner/other", "branch": "copilot/post-implementation-analysis-enhancements"})
    run = repo.run_once()
    document = repo.done_doc("elsewhere")
    assert document["status"] == "done"
    assert "copilot/post-implementation-analysis-enhancements" in document["result"]["base_branch_note"]
    assert run.events("task.branch_fallback")


# ------------------------------------------------------------------ 2, and a person's hand on a running task
def test_a_running_daemon_starts_what_another_process_assigns_cancels_deleted_runs_and_keeps_edits(
        repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("rescan_interval_s: 30", "rescan_interval_s: 600"))
    with running_daemon(repo.path) as daemon:
        daemon.wait_event("daemon.ready", timeout=60)
        # assigned by another orchestrator while the daemon runs: started without a rescan or restart
        put_assigned(repo, "from-orchestrator", description="FAKE write a.txt x", status="assigned",
                     assigned_at=utc_iso())
        daemon.wait_event("task.finished", lambda e: e.get("task_id") == "from-orchestrator", timeout=30)
        # a person edits a running task's file: their keys survive the daemon's final rewrite
        repo.submit("edited", description="FAKE sleep 3\nFAKE write b.txt x")
        daemon.wait_event("task.started", lambda e: e.get("task_id") == "edited", timeout=30)
        running = repo.board / "assigned" / AGENT / "edited.yaml"
        document = load(running)
        document.update({"title": "A better title", "priority": "high", "note": "added while it ran"})
        yamlio.write_yaml(running, document)
        daemon.wait_event("task.finished", lambda e: e.get("task_id") == "edited", timeout=60)
        done = repo.done_doc("edited")
        assert (done["title"], done["priority"], done["note"], done["status"]) == \
            ("A better title", "high", "added while it ran", "done")
        # a person deletes a running task's file: the run is cancelled, nothing is committed or written back
        repo.submit("deleted", description="FAKE sleep 30\nFAKE write c.txt x")
        daemon.wait_event("task.started", lambda e: e.get("task_id") == "deleted", timeout=30)
        (repo.board / "assigned" / AGENT / "deleted.yaml").unlink()
        daemon.wait_event("task.cancelled", lambda e: e.get("task_id") == "deleted", timeout=20)
        wait_for(lambda: "deleted" not in running_ids(repo), what="the cancelled run to be reaped")
        assert not repo.done_path("deleted").exists()
        assert not (repo.board / "assigned" / AGENT / "deleted.yaml").exists()
        assert "conveyor/deleted" not in repo.branches()
    assert repo.done_doc("from-orchestrator")["status"] == "done"
    assert yaml.safe_load(repo.done_path("from-orchestrator").read_text())["assigned_at"].endswith("Z")
