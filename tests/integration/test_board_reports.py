"""WORKFLOW_LOG.md gets one line per transition, appended and never rewritten; AGENT_STATUS.md shows queues
per agent, what runs and the latest results, rewritten only when it changed and at most every few seconds."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from conveyor.board.reports import AgentStatusFile, Snapshot, Tally, Transition, WorkflowLog, render_agent_status
from conveyor.core.task import Task
from conveyor.daemon import upkeep as upkeep_module
from tests.integration.hygiene_repo import ROADMAP_OFF, hygiene_repo, load


def events(log: str) -> list[tuple[str, str]]:
    """(event, task id) of every row of the log table."""
    rows = re.findall(r"^\| \d{4}-\d\d-\d\dT[\d:]+Z \| (\w+) \| (\S+) \|", log, re.MULTILINE)
    return [(event, task_id) for event, task_id in rows]


def table_row(status: str, agent: str) -> list[str]:
    (line,) = [line for line in status.splitlines() if line.startswith(f"| {agent} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_every_transition_is_logged_and_the_status_file_sums_them_up(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF)
    repo.submit("a-ok", description="FAKE write a.txt")
    repo.submit("b-fails", description="FAKE exit 2")
    repo.submit("c-qa", agent="qa", description="FAKE write c.txt")
    repo.drop("d-broken.yaml", "id: [\n")
    assert repo.run_once().code == 0

    log_path = repo.board / "WORKFLOW_LOG.md"
    first = log_path.read_text(encoding="utf-8")
    assert first.startswith("# Workflow log\n")
    seen = events(first)
    for task_id, last in (("a-ok", "done"), ("b-fails", "error"), ("c-qa", "done")):
        assert [e for e, t in seen if t == task_id] == ["claimed", "started", last]
    assert ("rejected", "d-broken") in seen
    status = (repo.board / "AGENT_STATUS.md").read_text(encoding="utf-8")
    # Agent | Waiting | Queued | Running | Done | Failed
    assert table_row(status, "backend-dev") == ["backend-dev", "0", "0", "0", "1", "1"]
    assert table_row(status, "qa") == ["qa", "0", "0", "0", "1", "0"]
    recent = status.split("## Last results")[1]
    assert "`b-fails` (backend-dev): error" in recent and "`a-ok` (backend-dev): done" in recent

    with log_path.open("a", encoding="utf-8") as handle:
        handle.write("a note someone typed without a newline")
    repo.submit("e-later", description="FAKE write e.txt")
    repo.run_once()
    second = log_path.read_text(encoding="utf-8")
    assert second.startswith(first + "a note someone typed without a newline\n")   # appended, never rewritten
    assert [e for e, t in events(second) if t == "e-later"] == ["claimed", "started", "done"]
    status = (repo.board / "AGENT_STATUS.md").read_text(encoding="utf-8")
    assert table_row(status, "backend-dev")[4:] == ["2", "1"]      # the earlier run's results still count


def test_the_status_file_shows_queues_and_running_tasks() -> None:
    def task(task_id: str, agent: str) -> Task:
        return Task(Path(f"{task_id}.yaml"), {"id": task_id, "agent": agent, "started_at": "2026-11-23T09:00:00Z"})

    tally = Tally()
    snapshot = Snapshot(queued=[task(f"q{i}", "dev") for i in range(25)], running=[task("r", "dev")],
                        waiting=[task("w", "qa")])
    text = render_agent_status(tally, snapshot, 0.0)
    assert table_row(text, "dev") == ["dev", "0", "25", "1", "0", "0"]
    assert table_row(text, "qa") == ["qa", "1", "0", "0", "0", "0"]
    assert "- `r` (dev) since 2026-11-23T09:00:00Z" in text
    assert "- … and 5 more" in text                       # long queues are cut, the count says how many


def test_the_status_file_is_rewritten_only_when_changed_and_not_too_often(tmp_path: Path) -> None:
    status = AgentStatusFile(tmp_path / "AGENT_STATUS.md", min_interval_s=3600)
    assert status.due()
    assert status.write("one\n")
    inode = (tmp_path / "AGENT_STATUS.md").stat().st_ino
    assert not status.due()                                # the next write waits for the interval
    assert not status.write("one\n")                       # unchanged text: no write at all
    assert (tmp_path / "AGENT_STATUS.md").stat().st_ino == inode


def test_log_lines_are_buffered_and_cells_kept_on_one_row(tmp_path: Path) -> None:
    log = WorkflowLog(tmp_path / "WORKFLOW_LOG.md")
    log.add(Transition(time.time(), "error", "t1", "dev", "line one\nline | two"))
    assert not log.path.exists()                           # nothing written until the loop flushes
    assert log.flush() == 1 and log.flush() == 0
    (row,) = [line for line in log.path.read_text(encoding="utf-8").splitlines() if "| t1 |" in line]
    assert row.endswith("| error | t1 | dev | line one line \\| two |")


def test_paperwork_failures_never_stop_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WORKFLOW_LOG.md cannot be written (it is a folder) and rendering AGENT_STATUS.md has a bug: both are
    logged, and the tasks still run and finish."""
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF)
    (repo.board / "WORKFLOW_LOG.md").mkdir()

    def broken(*_args: object) -> str:
        raise RuntimeError("a bug in rendering")

    monkeypatch.setattr(upkeep_module, "render_agent_status", broken)
    repo.submit("t-ok", description="FAKE write t.txt")
    run = repo.run_once()
    assert run.code == 0
    assert load(repo.done_path("t-ok"))["status"] == "done"
    assert {e["step"] for e in run.events("upkeep.failed")} == {"workflow_log"}
    assert {e["step"] for e in run.events("upkeep.internal_error")} == {"reports"}
