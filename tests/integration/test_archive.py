"""Archival: finished tasks older than `archive_after_days` move to `archive/YYYY-MM/` (their month of
completion), by rename, never replacing anything; recent ones and rejected files stay; dependencies on an
archived task still count as done."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor.board.archive import Archived, archive_slice
from conveyor.board.history import History
from conveyor.board.history_sync import HistorySync
from conveyor.board.layout import BoardLayout
from tests.integration.conftest import catch_up
from tests.integration.hygiene_repo import ROADMAP_OFF, agent_runs, hygiene_repo, load

DAY = 86_400.0


def finished(layout: BoardLayout, agent: str, task_id: str, text: str) -> Path:
    path = layout.done_dir(agent) / f"{task_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def archive_all(layout: BoardLayout, now: float, after_days: int) -> list[Archived]:
    """Every slice the daemon's archive job would run, on a history table built from the board."""
    history = History.in_memory()
    sync = HistorySync(layout, history)
    sync.start()
    catch_up(sync)
    moved: list[Archived] = []
    cursor = None
    while True:
        done = archive_slice(layout, history, now, after_days, cursor=cursor)
        moved += done.moved
        if not done.more:
            return moved
        cursor = done.cursor


def test_old_finished_tasks_move_to_their_month_and_new_ones_stay(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF + "archive_after_days: 30\n")
    layout = BoardLayout(repo.board)
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2 * DAY))
    old_done = finished(layout, "backend-dev", "old-done", repo.task_text("old-done", status="done",
                                                                          completed_at="2020-03-05T10:00:00Z"))
    old_error = finished(layout, "qa", "old-error", repo.task_text("old-error", agent="qa", status="error",
                                                                  completed_at="2020-04-30T23:59:59Z"))
    new_done = finished(layout, "backend-dev", "new-done", repo.task_text("new-done", status="done",
                                                                          completed_at=recent))
    undated = finished(layout, "backend-dev", "undated", repo.task_text("undated", status="done"))
    os.utime(undated, (time.time() - 400 * DAY, time.time() - 400 * DAY))   # no date: the file's age counts
    undated_month = time.strftime("%Y-%m", time.gmtime(undated.stat().st_mtime))
    layout.ensure()
    rejected = layout.rejected / "broken.yaml"
    rejected.write_text("id: [\n", encoding="utf-8")
    os.utime(rejected, (0, 0))
    old_bytes = old_done.read_bytes()
    repo.submit("needs-old", description="FAKE write x.txt", dependencies=["old-done"])

    run = repo.run_once()
    assert run.code == 0
    assert (repo.board / "archive" / "2020-03" / "old-done.yaml").read_bytes() == old_bytes   # moved, not rewritten
    assert (repo.board / "archive" / "2020-04" / "old-error.yaml").is_file()
    assert (repo.board / "archive" / undated_month / "undated.yaml").is_file()
    assert not old_done.exists() and not old_error.exists() and not undated.exists()
    assert new_done.is_file() and rejected.is_file()
    assert load(repo.done_path("needs-old"))["status"] == "done"       # an archived dependency is still done
    assert agent_runs(repo) == ["needs-old"]
    log = (repo.board / "WORKFLOW_LOG.md").read_text(encoding="utf-8")
    assert "| archived | old-done | backend-dev | to archive/2020-03/ |" in log
    assert "| archived | old-error | qa | to archive/2020-04/ |" in log


def test_archival_never_replaces_an_archived_file(tmp_path: Path) -> None:
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    source = finished(layout, "dev", "same-id", "id: same-id\ncompleted_at: '2021-01-02T00:00:00Z'\n")
    target = layout.archive / "2021-01" / "same-id.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("the first one\n", encoding="utf-8")
    assert archive_all(layout, time.time(), 30) == []
    assert source.is_file() and target.read_text(encoding="utf-8") == "the first one\n"


def test_the_cutoff_is_archive_after_days_before_now(tmp_path: Path) -> None:
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    now = 1_800_000_000.0                                   # 2027-01-15T08:00:00Z
    finished(layout, "dev", "edge-in", "id: edge-in\ncompleted_at: '2026-12-16T07:59:00Z'\n")
    finished(layout, "dev", "edge-out", "id: edge-out\ncompleted_at: '2026-12-16T08:01:00Z'\n")
    moved = archive_all(layout, now, 30)
    assert [(m.task_id, m.agent, m.target.parent.name) for m in moved] == [("edge-in", "dev", "2026-12")]
