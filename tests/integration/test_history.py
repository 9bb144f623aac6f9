"""History costs nothing at run time: start-up, intake, `conveyor status` and archival read the history
table, not the finished task files; dependencies on tasks archived long ago still resolve; archival runs in
bounded slices that resume; a deleted or corrupt table is rebuilt; a daemon killed mid-archive loses nothing.

File reads and folder listings are counted with a real audit hook (`sys.addaudithook`) around a real
daemon run on a real board of a few thousand finished task files in the daemon's own format.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.board.archive import SLICE, archive_slice
from conveyor.board.history import History
from conveyor.board.history_sync import HistorySync
from conveyor.board.layout import BoardLayout
from conveyor.board.reports import RECENT
from conveyor.core.state_files import HISTORY_FILE
from conveyor.daemon.status import collect_status
from tests.integration.conftest import Repo, catch_up
from tests.integration.daemon_process import DaemonProcess
from tests.integration.hygiene_repo import ROADMAP_OFF, agent_runs, hygiene_repo, load

DAY = 86_400.0
NOW = time.time()


def finished_text(task_id: str, agent: str, completed: float, *, failed: bool = False) -> str:
    """A finished task as the daemon writes it (result or error block, claimed_by, timestamps), ~1 KB."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(completed))
    document: dict[str, Any] = {
        "id": task_id, "agent": agent, "status": "error" if failed else "done", "title": f"History {task_id}",
        "description": "A paragraph of what the author asked for, long enough to make a kilobyte of task.\n",
        "artefacts": ["src/app.py"], "priority": "normal", "dependencies": [], "created_at": stamp,
        "claimed_by": "conveyor@test:1", "attempt": 1, "started_at": stamp, "completed_at": stamp}
    if failed:
        document["error"] = {"message": f"verify failed for {task_id}", "kind": "verify", "timestamp": stamp}
    else:
        document["result"] = {"summary": "Changed the app as asked.", "branch": f"conveyor/{task_id}",
                              "commit": "0123456789abcdef0123456789abcdef01234567", "cost_usd": 0.01}
    return yaml.safe_dump(document, sort_keys=False)


def write_history(layout: BoardLayout, *, archived: int = 0, done_old: int = 0, done_recent: int = 0,
                  agent: str = "backend-dev") -> list[str]:
    """`archived` tasks in archive/YYYY-MM/, then `done_old` in done/ past the archive age, then `done_recent`
    in done/ within it; returns the ids, oldest first (every 20th failed)."""
    ids = []
    total = archived + done_old + done_recent
    for index in range(total):
        task_id = f"hist-{index:06d}"
        completed = NOW - 400 * DAY + index * 60.0 if index < archived + done_old else NOW - DAY + index
        month = time.strftime("%Y-%m", time.gmtime(completed))
        folder = layout.archive / month if index < archived else layout.done_dir(agent)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{task_id}.yaml").write_text(finished_text(task_id, agent, completed, failed=index % 20 == 7),
                                                encoding="utf-8")
        ids.append(task_id)
    return ids


@dataclass
class Reads:
    """Opens and listings of paths under one board, as the audit hook saw them."""

    board: Path
    opened: list[Path] = field(default_factory=list)
    listed: list[Path] = field(default_factory=list)

    def finished_opened(self, *, besides: tuple[str, ...] = ()) -> list[Path]:
        """Task files opened under done/ (not _rejected) or archive/, other than those named."""
        found = []
        for path in self.opened:
            parts = path.relative_to(self.board).parts
            if parts and parts[0] in ("done", "archive") and "_rejected" not in parts and path.suffix == ".yaml" \
                    and path.stem not in besides:
                found.append(path)
        return found

    def archive_months_listed(self) -> list[Path]:
        return [path for path in self.listed if path.parent == self.board / "archive"]


_WATCHING: list[Reads] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCHING or event not in ("open", "os.scandir", "os.listdir") or not args:
        return
    target = args[0]
    if isinstance(target, bytes):
        target = target.decode("utf-8", "replace")
    if not isinstance(target, str | Path):
        return
    path = Path(target)
    for reads in _WATCHING:
        if path.is_absolute() and path.is_relative_to(reads.board):
            (reads.opened if event == "open" else reads.listed).append(path)


sys.addaudithook(_hook)


@contextmanager
def counting(board: Path) -> Iterator[Reads]:
    reads = Reads(board.resolve())
    _WATCHING.append(reads)
    try:
        yield reads
    finally:
        _WATCHING.remove(reads)


def history_repo(tmp_path: Path, extra: str = "") -> Repo:
    return hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF + "archive_after_days: 30\n" + extra)


def table(repo: Repo) -> Path:
    return repo.config().state_dir / HISTORY_FILE


# ------------------------------------------------------------------ not re-read
def test_start_intake_and_status_read_no_finished_file_once_the_table_exists(tmp_path: Path) -> None:
    repo = history_repo(tmp_path)
    layout = BoardLayout(repo.board)
    ids = write_history(layout, archived=2000, done_recent=200)
    repo.submit("first", description="FAKE write a.txt", dependencies=[ids[10]])
    first = repo.run_once()                               # builds the table once (every file read once)
    assert first.code == 0 and agent_runs(repo) == ["first"]
    assert first.events("history.rebuilt")

    repo.submit("second", description="FAKE write b.txt", dependencies=[ids[11], ids[2100], "first"])
    with counting(repo.board) as reads:
        second = repo.run_once()
        status = collect_status(repo.config(), time.time())
    assert second.code == 0 and agent_runs(repo) == ["first", "second"]
    # Not one of 2,201 finished files is re-read for counts, dependencies or the done list; the only files
    # opened are the 10 errors whose message `status` shows and the few latest AGENT_STATUS.md lists, because
    # summaries and error messages (the agent's words) are never kept in the state folder (privacy: metadata).
    opened = reads.finished_opened(besides=("second",))
    assert len(opened) <= 10 + RECENT, opened
    assert reads.archive_months_listed() == []                  # archive/ months never listed
    assert status.counts["done"] == 200 - 10 + 2 and status.counts["errors"] == 10
    assert [entry["id"] for entry in status.done[:2]] == ["second", "first"]
    assert not second.events("history.rebuild_started")


def test_a_dependency_on_a_task_archived_long_ago_resolves_without_the_table(tmp_path: Path) -> None:
    """The table deleted: the first pass already finds the archived dependency on the board by name
    (a few stats), while the table is rebuilt in the background; a failed archived one says so."""
    repo = history_repo(tmp_path)
    layout = BoardLayout(repo.board)
    ids = write_history(layout, archived=1200, done_recent=10)
    repo.submit("warm-up", description="FAKE write a.txt")
    repo.run_once()
    table(repo).unlink()
    repo.submit("needs-archived", description="FAKE write b.txt", dependencies=[ids[3]])
    repo.submit("needs-failed", description="FAKE write c.txt", dependencies=[ids[7]])   # index 7 failed
    run = repo.run_once()
    assert run.code == 0 and "needs-archived" in agent_runs(repo) and "needs-failed" not in agent_runs(repo)
    assert run.events("history.rebuild_started") and run.events("history.rebuilt")
    assert (repo.inbox / "needs-failed.yaml").is_file()
    status = collect_status(repo.config(), time.time())
    waiting = {entry["id"]: entry["reason"] for entry in status.waiting}
    assert f"dependency {ids[7]} failed" in waiting["needs-failed"]


def test_a_duplicate_of_an_archived_id_is_rejected_without_listing_archive(tmp_path: Path) -> None:
    repo = history_repo(tmp_path)
    layout = BoardLayout(repo.board)
    ids = write_history(layout, archived=500)
    repo.run_once()
    repo.submit(ids[42], description="FAKE write a.txt")
    with counting(repo.board) as reads:
        run = repo.run_once()
    assert run.code == 0 and agent_runs(repo) == []
    assert any(ids[42] in str(e.get("problems")) and "already on the board" in str(e.get("problems"))
               for e in run.events("task.rejected"))
    assert reads.archive_months_listed() == []


# ------------------------------------------------------------------ rebuilt when missing or corrupt
def test_a_corrupt_table_is_rebuilt_and_counts_come_back(tmp_path: Path) -> None:
    repo = history_repo(tmp_path)
    layout = BoardLayout(repo.board)
    write_history(layout, archived=400, done_recent=60)
    repo.run_once()
    before = collect_status(repo.config(), time.time()).counts
    table(repo).write_bytes(b"this is not a database, it was overwritten by accident\n" * 200)
    for leftover in (Path(str(table(repo)) + "-wal"), Path(str(table(repo)) + "-shm")):
        leftover.unlink(missing_ok=True)
    run = repo.run_once()
    assert run.code == 0 and run.events("history.corrupt") and run.events("history.rebuilt")
    with sqlite3.connect(table(repo)) as conn:
        assert conn.execute("SELECT count(*) FROM finished WHERE alias = 0").fetchone()[0] == 460
    assert collect_status(repo.config(), time.time()).counts == before == {
        **before, "done": 57, "errors": 3}


def test_status_without_a_table_reads_done_only(tmp_path: Path) -> None:
    """No daemon has run here yet: `conveyor status` counts done/ from the files, never archive/."""
    repo = history_repo(tmp_path)
    layout = BoardLayout(repo.board)
    write_history(layout, archived=300, done_recent=40)
    with counting(repo.board) as reads:
        status = collect_status(repo.config(), time.time())
    assert status.counts["done"] == 38 and status.counts["errors"] == 2
    assert reads.archive_months_listed() == [] and not table(repo).exists()


# ------------------------------------------------------------------ sliced archival
def test_archival_moves_bounded_slices_and_resumes_until_done(tmp_path: Path) -> None:
    repo = history_repo(tmp_path)
    layout = BoardLayout(repo.board)
    ids = write_history(layout, done_old=2 * SLICE + 50, done_recent=5)
    run = repo.run_once()
    moved = [event["count"] for event in run.events("archive.moved")]
    assert moved == [SLICE, SLICE, 50]                          # three passes of the loop, none over SLICE
    assert sorted(p.stem for p in layout.archive.rglob("*.yaml")) == ids[: 2 * SLICE + 50]
    assert sorted(p.stem for p in layout.done.rglob("*.yaml")) == ids[2 * SLICE + 50:]


def test_a_slice_passes_over_a_file_it_cannot_move_and_the_next_resumes_after_it(tmp_path: Path) -> None:
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    ids = write_history(layout, done_old=5)
    first = layout.done_dir("backend-dev") / f"{ids[0]}.yaml"
    month = time.strftime("%Y-%m", time.gmtime(NOW - 400 * DAY))
    (layout.archive / month).mkdir(parents=True)
    (layout.archive / month / first.name).write_text("the first one\n", encoding="utf-8")
    history = History.in_memory()
    sync = HistorySync(layout, history)
    sync.start()
    catch_up(sync)
    one = archive_slice(layout, history, NOW, 30, limit=2)
    assert [m.task_id for m in one.moved] == [ids[1]] and one.more          # ids[0] stays: a same-named file
    two = archive_slice(layout, history, NOW, 30, limit=2, cursor=one.cursor)
    assert [m.task_id for m in two.moved] == ids[2:4] and two.more
    three = archive_slice(layout, history, NOW, 30, limit=2, cursor=two.cursor)
    assert [m.task_id for m in three.moved] == ids[4:] and not three.more
    assert first.is_file() and (layout.archive / month / first.name).read_text(encoding="utf-8") == "the first one\n"


def test_a_daemon_killed_mid_archive_loses_nothing_and_the_next_one_finishes(tmp_path: Path) -> None:
    repo = history_repo(tmp_path, "rescan_interval_s: 1\n")
    layout = BoardLayout(repo.board)
    ids = write_history(layout, done_old=4000, done_recent=3)
    texts = {path.stem: path.read_bytes() for path in layout.done.rglob("*.yaml")}
    env = {**repo.extra_env}
    daemon = DaemonProcess(repo.path, env).start()
    try:
        daemon.wait_event("archive.moved", timeout=120)
        daemon.signal(signal.SIGKILL)
        daemon.wait(30)
    finally:
        if daemon.alive():
            daemon.kill_group()
    archived_at_kill = len(list(layout.archive.rglob("*.yaml")))
    assert 0 < archived_at_kill < 4000
    on_board = [p.stem for p in [*layout.done.rglob("*.yaml"), *layout.archive.rglob("*.yaml")]]
    assert sorted(on_board) == sorted(ids)                                # nothing lost, nothing doubled

    repo.submit("after-crash", description="FAKE write a.txt", dependencies=[ids[3999], ids[0]])
    again = DaemonProcess(repo.path, env).start()
    try:
        again.wait_event("task.finished", lambda e: e.get("task_id") == "after-crash", timeout=180)
        deadline = time.monotonic() + 180
        while len(list(layout.done.rglob("hist-*.yaml"))) > 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        again.stop(60)
    assert load(repo.done_path("after-crash"))["status"] == "done"
    assert sorted(p.stem for p in layout.done.rglob("hist-*.yaml")) == ids[4000:]
    archived = {p.stem: p for p in layout.archive.rglob("*.yaml")}
    assert sorted(archived) == ids[:4000]
    assert all(archived[task_id].read_bytes() == texts[task_id] for task_id in ids[:4000])   # moved, not rewritten
    with sqlite3.connect(table(repo)) as conn:
        rows = dict(conn.execute("SELECT task_id, file FROM finished WHERE alias = 0 AND task_id LIKE 'hist-%'"))
    assert len(rows) == 4003 and all((layout.root / rows[t]).is_file() for t in ids)


def test_a_rebuild_cut_short_resumes_without_reading_what_it_already_read(tmp_path: Path) -> None:
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    ids = write_history(layout, archived=40, done_recent=10)
    path = tmp_path / "state" / HISTORY_FILE
    first = HistorySync(layout, History(path))
    first.start()
    first.step(limit=25, budget_s=60.0)
    assert first.rebuilding and first.parsed == 25
    first.history.close()                                   # the daemon stopped here

    second = HistorySync(layout, History(path))
    second.start()
    catch_up(second)
    assert second.parsed == 25 and not second.rebuilding and second.history.complete
    assert all(second.history.get(task_id) is not None for task_id in ids)


def test_work_a_board_refresh_queues_brings_the_history_job_forward(tmp_path: Path) -> None:
    """A refresh of the board (on a rescan) reconciles done/ and may queue files for the history table;
    only its own periodic job indexes them, which then waited a whole period (60 s: a `--once` run, which
    waits for sliced work, sat idle that long). Now the queued work brings the job forward."""
    from conveyor.board.index import BoardIndex
    from conveyor.daemon.periodic import Periodic
    from conveyor.daemon.upkeep import INDEX_GAP_S, Snapshot, Upkeep
    from conveyor.telemetry.store import Telemetry

    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF)
    config = repo.config()
    layout = BoardLayout(config.board_root)
    layout.ensure()
    now = [1_000_000.0]
    periodic = Periodic(lambda: now[0])
    index = BoardIndex(layout)
    upkeep = Upkeep(config, layout, index, Telemetry(config.telemetry_db), lambda: now[0],
                    lambda: Snapshot([], [], []), periodic)
    upkeep.start(lambda: None, watch=False)
    periodic.run_due()                                          # every job once, at start
    while index.sync.busy:
        index.sync.step()
    now[0] += 1
    assert periodic.next_in() is not None and periodic.next_in() > 1   # nothing due for a while
    (layout.done / "dev").mkdir(parents=True, exist_ok=True)
    (layout.done / "dev" / "by-hand.yaml").write_text(
        "id: by-hand\nagent: dev\nstatus: done\ntitle: Put here by a person\n", encoding="utf-8")
    index.refresh()                                             # a rescan: done/ changed
    assert index.sync.busy
    assert upkeep.slicing()
    assert periodic.next_in() == pytest.approx(INDEX_GAP_S)
    now[0] += 1
    assert "history" in periodic.run_due()
    assert not index.sync.busy and not upkeep.slicing()
