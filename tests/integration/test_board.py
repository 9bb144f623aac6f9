"""The board on a real filesystem: claims race safely, never replace a file, and rejects are explained."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.board import layout as board
from conveyor.board.index import BoardIndex, Known
from conveyor.board.layout import BoardLayout
from conveyor.core import fsops, yamlio
from conveyor.core.errors import Problem
from conveyor.core.task import parse_task
from tests.integration.conftest import catch_up

ROUNDS = 200


@pytest.fixture
def layout(tmp_path: Path) -> BoardLayout:
    result = BoardLayout(tmp_path / "board")
    result.ensure()
    return result


def put(folder: Path, name: str, text: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text or f"id: {Path(name).stem}\nagent: dev\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ claim races
def _race(claimers: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(claimers)
    barrier = threading.Barrier(len(claimers))

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = claimers[index]()
        except Exception as exc:  # recorded and asserted on below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(claimers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_threads_claiming_the_same_file_exactly_one_wins(layout: BoardLayout) -> None:
    for index in range(ROUNDS):
        source = put(layout.inbox, f"t{index}.yaml", f"id: t{index}\nagent: dev\nround: {index}\n")
        results = _race([lambda s=source: board.claim(layout, s, "dev")] * 2)
        winners = [r for r in results if isinstance(r, Path)]
        assert len(winners) == 1, results
        assert results.count(None) == 1, results
        assert not source.exists()
        assert winners[0] == layout.assigned_dir("dev") / f"t{index}.yaml"
        assert f"round: {index}" in winners[0].read_text()


def test_two_threads_racing_on_the_link_fallback_exactly_one_wins(tmp_path: Path) -> None:
    """Where the kernel has no no-replace rename, link + unlink must give the same guarantee."""
    for index in range(ROUNDS):
        source = put(tmp_path / "in", f"t{index}.yaml")
        targets = [tmp_path / "a" / source.name, tmp_path / "b" / source.name]
        for target in targets:
            target.parent.mkdir(exist_ok=True)
        results = _race([lambda t=t, s=source: fsops._link_then_unlink(s, t) for t in targets])
        wins = [r for r in results if r is None]
        losses = [r for r in results if isinstance(r, FileNotFoundError)]
        assert (len(wins), len(losses)) == (1, 1), results
        assert sum(t.exists() for t in targets) == 1
        assert not source.exists()


def _claim_in_process(inbox: str, assigned_root: str, rounds: int, barrier: BarrierType,
                      results: Any, name: str) -> None:
    layout = BoardLayout(Path(assigned_root))
    for index in range(rounds):
        barrier.wait()
        try:
            won = board.claim(layout, Path(inbox) / f"t{index}.yaml", "dev")
            results.put((index, name, "won" if won else "lost"))
        except Exception as exc:  # reported to the parent, which fails the test
            results.put((index, name, f"error: {exc!r}"))


def test_two_processes_claiming_the_same_files_exactly_one_wins_each(layout: BoardLayout) -> None:
    for index in range(ROUNDS):
        put(layout.inbox, f"t{index}.yaml")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [context.Process(target=_claim_in_process, args=(str(layout.inbox), str(layout.root), ROUNDS,
                                                                 barrier, results, name))
                 for name in ("p1", "p2")]
    for process in processes:
        process.start()
    outcomes: dict[int, list[str]] = {}
    for _ in range(2 * ROUNDS):
        index, _name, outcome = results.get(timeout=60)
        outcomes.setdefault(index, []).append(outcome)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert all(sorted(found) == ["lost", "won"] for found in outcomes.values()), outcomes
    assert len(list(layout.assigned_dir("dev").iterdir())) == ROUNDS
    assert list(layout.inbox.iterdir()) == []


def test_a_claim_never_replaces_an_existing_file(layout: BoardLayout) -> None:
    original = put(layout.assigned_dir("dev"), "t.yaml", "id: t\nagent: dev\nwho: original\n")
    newcomer = put(layout.inbox, "t.yaml", "id: t\nagent: dev\nwho: newcomer\n")
    with pytest.raises(FileExistsError):
        board.claim(layout, newcomer, "dev")
    assert "original" in original.read_text()
    assert "newcomer" in newcomer.read_text()


def test_claiming_a_vanished_file_is_a_lost_race(layout: BoardLayout) -> None:
    assert board.claim(layout, layout.inbox / "gone.yaml", "dev") is None


def test_rename_noreplace_refuses_to_overwrite(tmp_path: Path) -> None:
    src, dst = put(tmp_path, "a.yaml", "a"), put(tmp_path, "b.yaml", "b")
    with pytest.raises(FileExistsError):
        fsops.rename_noreplace(src, dst)
    assert (src.read_text(), dst.read_text()) == ("a", "b")
    fsops.rename_noreplace(src, tmp_path / "c.yaml")
    assert (tmp_path / "c.yaml").read_text() == "a" and not src.exists()


# ------------------------------------------------------------------ rejection
def test_reject_moves_the_file_unchanged_and_explains_each_problem(layout: BoardLayout) -> None:
    raw = b"id: [unclosed\n\xe2\x9c\x93 bytes kept as they were\n"
    bad = layout.inbox / "bad.yaml"
    bad.write_bytes(raw)
    problems = [Problem(str(bad), "is not valid YAML", "fix the syntax", line=1),
                Problem(str(bad), "is missing", "add `agent:`", field="agent")]
    target = board.reject(layout, bad, problems, "2026-11-23T09:00:00Z")
    assert target == layout.rejected / "bad.yaml"
    assert target.read_bytes() == raw
    assert not bad.exists()
    report = yaml.safe_load((layout.rejected / "bad.yaml.error.yaml").read_text())
    assert report["file"] == "bad.yaml"
    assert report["rejected_at"] == "2026-11-23T09:00:00Z"
    assert report["problems"] == [
        {"file": "bad.yaml", "line": 1, "message": "is not valid YAML", "fix": "fix the syntax"},
        {"file": "bad.yaml", "field": "agent", "message": "is missing", "fix": "add `agent:`"},
    ]
    assert "inbox/bad.yaml" in report["what_to_do"]


def test_a_second_reject_of_the_same_name_keeps_both(layout: BoardLayout) -> None:
    for round_ in ("first", "second"):
        bad = put(layout.inbox, "bad.yaml", f"{round_}: [\n")
        board.reject(layout, bad, [Problem(str(bad), "broken")], "2026-11-23T09:00:00Z")
    assert (layout.rejected / "bad.yaml").read_text() == "first: [\n"
    assert (layout.rejected / "bad.yaml.1").read_text() == "second: [\n"
    assert (layout.rejected / "bad.yaml.1.error.yaml").exists()


def test_rejecting_a_vanished_file_does_nothing(layout: BoardLayout) -> None:
    assert board.reject(layout, layout.inbox / "gone.yaml", [], "now") is None
    assert list(layout.rejected.iterdir()) == []


# ------------------------------------------------------------------ rewrite, move, listing
def test_rewrite_keeps_the_authors_keys_order_and_values(layout: BoardLayout) -> None:
    text = ("id: t\nagent: dev\nzeta: last-alphabetically\ncreated_at: 2026-11-23T09:00:00Z\n"
            "acceptance_criteria:\n  - one\n  - two\nestimated_hours: 4\n")
    path = put(layout.assigned_dir("dev"), "t.yaml", text)
    task = parse_task(path)
    board.rewrite(task, {"status": "in_progress", "attempt": 1})
    document = yamlio.loads(path.read_bytes())
    assert list(document) == ["id", "agent", "zeta", "created_at", "acceptance_criteria", "estimated_hours",
                              "status", "attempt"]
    assert document["created_at"] == "2026-11-23T09:00:00Z"
    assert document["acceptance_criteria"] == ["one", "two"]
    assert [p.name for p in path.parent.iterdir()] == ["t.yaml"]   # no temp file left behind


def test_move_refuses_to_replace_and_updates_the_path(layout: BoardLayout) -> None:
    path = put(layout.assigned_dir("dev"), "t.yaml")
    task = parse_task(path)
    target = board.move(task, layout.done_dir("dev"))
    assert task.path == target == layout.done_dir("dev") / "t.yaml"
    again = parse_task(put(layout.assigned_dir("dev"), "t.yaml"))
    with pytest.raises(FileExistsError):
        board.move(again, layout.done_dir("dev"))


def test_move_completes_one_interrupted_between_link_and_unlink(layout: BoardLayout) -> None:
    """A crash between the link into done/ and the unlink from assigned/ leaves one file under both names;
    the next move (start-up recovery makes it) finishes the move instead of refusing it."""
    path = put(layout.assigned_dir("dev"), "t.yaml", "id: t\nagent: dev\nstatus: done\n")
    layout.done_dir("dev").mkdir(parents=True)
    os.link(path, layout.done_dir("dev") / "t.yaml")
    task = parse_task(path)
    target = board.move(task, layout.done_dir("dev"))
    assert not path.exists() and target.read_text() == "id: t\nagent: dev\nstatus: done\n"
    assert list(layout.assigned_dir("dev").iterdir()) == []


def test_move_out_of_assigned_is_a_deletion_there_not_a_rename(layout: BoardLayout) -> None:
    """watchdog holds an unpaired IN_MOVED_FROM half a second, and every later event of that watch waits
    behind it: the next task another process assigns would wait too. Leaving by link and unlink, a task
    shows as a deletion in assigned/ (what the daemon's assigned/ watch sees)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    seen: list[FileSystemEvent] = []
    arrived = threading.Event()

    class Record(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            seen.append(event)
            if event.event_type == "deleted":
                arrived.set()

    path = put(layout.assigned_dir("dev"), "t.yaml")
    observer = Observer()
    observer.schedule(Record(), str(layout.assigned), recursive=True)
    observer.start()
    try:
        board.move(parse_task(path), layout.done_dir("dev"))
        assert arrived.wait(10)
    finally:
        observer.stop()
        observer.join()
    assert [e.event_type for e in seen if e.src_path == str(path) and e.event_type in ("moved", "deleted")] \
        == ["deleted"]


def test_inbox_entries_skip_temporary_and_editor_files(layout: BoardLayout) -> None:
    for name in ("b.yaml", "a.yml", ".hidden.yaml", "c.yaml~", "d.yaml.tmp", ".e.yaml.swp", "notes.txt"):
        put(layout.inbox, name)
    assert [p.name for p in board.inbox_entries(layout)] == ["a.yml", "b.yaml"]


def test_inbox_entries_of_a_missing_inbox_is_empty(tmp_path: Path) -> None:
    assert board.inbox_entries(BoardLayout(tmp_path / "nowhere")) == []


def test_task_files_walks_agent_folders_but_not_rejected(layout: BoardLayout) -> None:
    put(layout.done_dir("dev"), "a.yaml")
    put(layout.done_dir("ops"), "b.yml")
    put(layout.done, "flat.yaml")
    put(layout.rejected, "bad.yaml")
    names = sorted(p.name for p in board.task_files(layout.done))
    assert names == ["a.yaml", "b.yml", "flat.yaml"]


# ------------------------------------------------------------------ index
def test_index_reads_statuses_and_declared_ids(layout: BoardLayout) -> None:
    put(layout.done_dir("dev"), "ok.yaml", "id: ok\nagent: dev\nstatus: done\n")
    put(layout.done_dir("dev"), "failed.yaml", "id: failed\nagent: dev\nstatus: error\n")
    put(layout.done_dir("dev"), "file-name.yaml", "id: declared-id\nagent: dev\nstatus: done\n")
    put(layout.done_dir("dev"), "broken.yaml", "id: [\n")
    put(layout.assigned_dir("dev"), "running.yaml", "id: running\nagent: dev\nstatus: in_progress\n")
    index = BoardIndex(layout)
    # issue 15: a file in assigned/ counts as the status it declares (the workflow leaves done files there)
    index.start()
    catch_up(index.sync)
    ids = ["ok", "failed", "file-name", "declared-id", "broken", "running"]
    status = {task_id: known.status for task_id in ids if (known := index.get(task_id)) is not None}
    assert status == {"ok": "done", "failed": "error", "file-name": "done", "declared-id": "done",
                      "broken": "error", "running": "in_progress"}


def test_index_notices_changes_and_notes(layout: BoardLayout) -> None:
    index = BoardIndex(layout)
    index.start()
    assert index.get("late") is None
    put(layout.done_dir("dev"), "late.yaml", "id: late\nagent: dev\nstatus: done\n")
    index.refresh()
    late = index.get("late")
    assert late is not None and late.status == "done"
    put(layout.assigned_dir("dev"), "late.yaml", "id: late\nagent: dev\nstatus: assigned\n")
    os.unlink(layout.done_dir("dev") / "late.yaml")
    index.note(Known("late", "assigned", layout.assigned_dir("dev") / "late.yaml"))
    moved = index.get("late")
    assert moved is not None and moved.status == "assigned"
    os.unlink(layout.assigned_dir("dev") / "late.yaml")
    os.rmdir(layout.done_dir("dev"))
    index.refresh()
    catch_up(index.sync)
    assert index.get("late") is None and index.history.files_in("done") == {}
