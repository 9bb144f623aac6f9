"""ROADMAP.md drives work: a planned item becomes exactly one task (across restarts and crashes), and the
item's status line, and only that line, follows the task: In Progress → In Review → Completed / Blocked."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.board.index import BoardIndex
from conveyor.board.layout import BoardLayout
from conveyor.core.task import parse_task
from conveyor.daemon.periodic import Periodic
from conveyor.daemon.upkeep import Snapshot, Upkeep
from conveyor.roadmap import file as roadmap_file
from conveyor.roadmap.edit import set_status
from conveyor.roadmap.parse import parse_roadmap
from conveyor.roadmap.select import count_in_flight, next_runnable
from conveyor.roadmap.sync import roadmap_task_id
from conveyor.telemetry.store import Telemetry
from tests.conftest import FIXTURES, REPO_ROOT
from tests.integration.hygiene_repo import (
    DAEMON_YAML,
    ROADMAP_ON,
    agent_runs,
    board_files,
    hygiene_repo,
    load,
    roadmap_path,
)
from tests.support.clock import TestClock
from tests.support.waiting import wait_for

ONE = "roadmap-1-first-thing"
TWO = "roadmap-2-second-thing"
ROADMAP = """\
# Roadmap

Intro the daemon must keep byte for byte ✨.

### 🔴 **PRIORITY 1: First thing**

**Status**: 📝 Planned
**Agent**: backend-dev

Do the first thing.
FAKE write src/one.txt one

### 🟡 **PRIORITY 2: Second thing**

**Status**: 📝 Planned
**Dependency**: Requires PRIORITY 1 (First thing) completed

FAKE write src/two.txt two
"""


def with_status(text: str, number: str, status: str) -> str:
    return set_status(text, number, status)



def test_a_planned_item_becomes_one_task_whose_status_line_follows_it(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(ROADMAP, encoding="utf-8")

    run = repo.run_once()
    assert run.code == 0
    (task_file,) = board_files(repo, "roadmap-")
    assert task_file == repo.done_path(ONE)
    document = load(task_file)
    assert document["status"] == "done" and document["agent"] == "backend-dev"
    assert document["title"] == "First thing"
    assert "Do the first thing." in document["description"]
    assert document["roadmap_item"] == {"file": "ROADMAP.md", "number": "1", "title": "First thing"}
    assert document["created_by"] == "conveyor-roadmap"
    in_review = with_status(ROADMAP, "1", f"👀 In Review (branch conveyor/{ONE})")
    assert path.read_text(encoding="utf-8") == in_review       # one line changed, every other byte kept
    statuses = [e["status"] for e in run.events("roadmap.status_written")]
    assert statuses == [f"🔄 In Progress (task {ONE})", f"👀 In Review (branch conveyor/{ONE})"]

    repo.run_once()                                  # nothing new: item 2 waits for item 1 to be completed
    assert agent_runs(repo) == [ONE]
    assert path.read_text(encoding="utf-8") == in_review

    repo.git("merge", "-q", "--no-ff", "-m", "merge item 1", f"conveyor/{ONE}")
    repo.run_once()                                  # merged → Completed, and item 2 runs
    text = path.read_text(encoding="utf-8")
    assert text == with_status(with_status(ROADMAP, "1", "✅ Completed"), "2",
                               f"👀 In Review (branch conveyor/{TWO})")
    assert agent_runs(repo) == [ONE, TWO]
    assert [p.name for p in board_files(repo, "roadmap-")] == [f"{ONE}.yaml", f"{TWO}.yaml"]


def test_a_restart_between_creating_the_task_and_finishing_it_still_makes_one(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_ON)
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("drain_grace_s: 10", "drain_grace_s: 0")
                      .replace("attempts: 1", "attempts: 2") + ROADMAP_ON)
    path = roadmap_path(repo)
    path.write_text(ROADMAP.replace("FAKE write src/one.txt one", "FAKE sleep@1 60\nFAKE write src/one.txt"),
                    encoding="utf-8")
    with repo.serving(watch=False):                     # stopped at the end, drain grace 0: the task stays
        wait_for(lambda: agent_runs(repo) == [ONE])     # the task exists and its agent is running
        assert f"🔄 In Progress (task {ONE})" in path.read_text(encoding="utf-8")
    assert [p.parent.name for p in board_files(repo, "roadmap-")] == ["backend-dev"]   # assigned/backend-dev

    repo.run_once()                                     # the restarted daemon finishes it: no second task
    (task_file,) = board_files(repo, "roadmap-")
    assert task_file == repo.done_path(ONE)
    assert load(task_file)["status"] == "done"
    assert agent_runs(repo) == [ONE, ONE]
    assert f"👀 In Review (branch conveyor/{ONE})" in path.read_text(encoding="utf-8")
    log = (repo.board / "WORKFLOW_LOG.md").read_text(encoding="utf-8")
    assert log.count(f"| created | {ONE} |") == 1


def test_a_task_written_just_before_a_crash_is_adopted_not_doubled(tmp_path: Path) -> None:
    """The daemon died after writing the task into inbox/ but before writing the status line."""
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(ROADMAP, encoding="utf-8")
    repo.submit(ONE, description="FAKE write src/one.txt adopted")
    repo.run_once()
    assert [p.name for p in board_files(repo, "roadmap-")] == [f"{ONE}.yaml"]
    assert agent_runs(repo) == [ONE]
    assert path.read_text(encoding="utf-8") == with_status(ROADMAP, "1", f"👀 In Review (branch conveyor/{ONE})")


def test_a_status_line_owed_by_a_daemon_stopped_after_done_is_written_at_the_next_start(tmp_path: Path) -> None:
    """The worker moved the task to done/, the loop never wrote In Review: the item would stay In Progress and
    hold a max_in_flight slot for ever. The next start writes the line the finish would have written."""
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(ROADMAP, encoding="utf-8")
    repo.run_once()
    in_progress = with_status(ROADMAP, "1", f"🔄 In Progress (task {ONE})")
    path.write_text(in_progress, encoding="utf-8")             # as the kill would have left it
    run = repo.run_once()
    assert [(e["item"], e["task_id"], e["status"]) for e in run.events("roadmap.status_owed")] == [("1", ONE, "done")]
    assert path.read_text(encoding="utf-8") == with_status(ROADMAP, "1", f"👀 In Review (branch conveyor/{ONE})")
    assert agent_runs(repo) == [ONE]                           # nothing ran again


def test_a_planned_item_whose_task_already_ran_is_left_alone(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(ROADMAP, encoding="utf-8")
    finished = repo.done_path(ONE)
    finished.parent.mkdir(parents=True, exist_ok=True)
    finished.write_text(repo.task_text(ONE, status="error"), encoding="utf-8")
    run = repo.run_once()
    assert agent_runs(repo) == []
    assert board_files(repo, "roadmap-") == [finished]
    assert path.read_text(encoding="utf-8") == ROADMAP
    (warning,) = run.events("roadmap.item_already_ran")
    assert warning["task_id"] == ONE and "move" in warning["fix"]


def test_a_failed_task_blocks_its_item_with_the_reason(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(ROADMAP.replace("FAKE write src/one.txt one", "FAKE exit 3"), encoding="utf-8")
    repo.run_once()
    assert load(repo.done_path(ONE))["status"] == "error"
    item = parse_roadmap(path.read_text(encoding="utf-8")).item("1")
    assert item.status.value == "blocked"
    assert item.status_text.startswith(f"⚠️ Blocked (task {ONE} failed: ")
    assert agent_runs(repo) == [ONE]                    # item 2 waits: its dependency is blocked


def test_a_roadmap_task_the_board_rejects_blocks_its_item(tmp_path: Path) -> None:
    """Someone broke the task file in inbox/ before it was claimed: it is rejected, and the item says so."""
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(ROADMAP, encoding="utf-8")
    repo.drop(f"{ONE}.yaml", "id: [unclosed\n")
    repo.run_once()
    assert agent_runs(repo) == []
    assert (repo.rejected / f"{ONE}.yaml").is_file()
    item = parse_roadmap(path.read_text(encoding="utf-8")).item("1")
    assert item.status_text.startswith(f"⚠️ Blocked (task {ONE} rejected: is not valid YAML")
    assert "| rejected | roadmap-1-first-thing |" in (repo.board / "WORKFLOW_LOG.md").read_text(encoding="utf-8")


def test_the_projects_own_roadmap_starts_nothing_and_stays_untouched(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path)
    shutil.copyfile(REPO_ROOT / "tests" / "unit" / "data" / "roadmaps" / "conveyor-plan-2026-11-20.ROADMAP.md",
                    roadmap_path(repo))
    before = roadmap_path(repo).read_bytes()
    run = repo.run_once()
    assert run.events("roadmap.task_created") == [] and agent_runs(repo) == []
    assert roadmap_path(repo).read_bytes() == before


def test_the_initiatives_and_phases_roadmap_runs_its_next_phases(tmp_path: Path) -> None:
    """The real initiatives/phases roadmap: unedited nothing may start (phase 1.1 is under way); once its
    author marks 1.1 complete, phases 1.2 and 1.3 become tasks for the agents they name."""
    repo = hygiene_repo(tmp_path, daemon_extra="roadmap: {enabled: true, default_agent: backend-dev, "
                                               "max_in_flight: 5}\n")
    repo.extra_env["FAKE_AGENT_DEFAULT"] = '[{"do": "write", "path": "agent/{task}.txt"}]'
    path = roadmap_path(repo)
    shutil.copyfile(FIXTURES / "roadmaps" / "initiatives-phases.ROADMAP.md", path)
    repo.run_once()
    assert agent_runs(repo) == []
    assert path.read_bytes() == (FIXTURES / "roadmaps" / "initiatives-phases.ROADMAP.md").read_bytes()

    edited = set_status(path.read_text(encoding="utf-8"), "1.1", "✅ Completed")   # the author's edit
    path.write_text(edited, encoding="utf-8")
    roadmap = parse_roadmap(edited)
    chosen = next_runnable(roadmap, in_flight_limit=5, in_flight=count_in_flight(roadmap)).start
    assert [item.number for item in chosen] == ["1.2", "1.3"]
    repo.run_once()
    ids = [roadmap_task_id(item) for item in chosen]
    assert sorted(agent_runs(repo)) == sorted(ids)
    agents = [load(board_files(repo, task_id)[0])["agent"] for task_id in ids]
    assert agents == ["architect-alphonso", "curator-claire"]
    expected = edited
    for item, task_id in zip(chosen, ids, strict=True):
        expected = set_status(expected, item.number, f"👀 In Review (branch conveyor/{task_id})")
    assert path.read_text(encoding="utf-8") == expected


def test_roadmap_changes_are_picked_up_from_file_events(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(with_status(ROADMAP, "1", "✅ Completed").split("### 🟡")[0], encoding="utf-8")
    clock = TestClock()
    with repo.serving(clock=clock):
        repo.wait_started()
        clock.wait_looks(20, "the daemon's next passes to read the clock")
        assert agent_runs(repo) == []
        staging = tmp_path / "ROADMAP.md.new"                       # saved the way editors save
        staging.write_text(with_status(ROADMAP, "1", "✅ Completed"), encoding="utf-8")
        os.replace(staging, path)
        wait_for(lambda: agent_runs(repo) == [TWO], timeout=15)     # the rescan is 30 s away: the event did it


def test_a_pull_request_recorded_merged_completes_the_item(tmp_path: Path) -> None:
    """Done with a pull request → In Review (url); merge detection's record in telemetry → Completed."""
    repo = hygiene_repo(tmp_path)
    path = roadmap_path(repo)
    path.write_text(with_status(ROADMAP, "1", f"🔄 In Progress (task {ONE})"), encoding="utf-8")
    url = "https://github.example/acme/app/pull/7"
    finished = repo.done_path(ONE)
    finished.parent.mkdir(parents=True)
    finished.write_text(repo.task_text(ONE, status="done", roadmap_item={"number": "1"},
                                       result={"branch": f"conveyor/{ONE}", "pr_url": url, "commit": None}),
                        encoding="utf-8")
    config = repo.config()
    layout = BoardLayout(config.board_root)
    telemetry = Telemetry(config.telemetry_db)
    upkeep = Upkeep(config, layout, BoardIndex(layout), telemetry, time.time, lambda: Snapshot([], [], []),
                    Periodic(time.time))
    upkeep.finished(parse_task(finished), "done")
    assert parse_roadmap(path.read_text(encoding="utf-8")).item("1").status_text == f"👀 In Review ({url})"

    upkeep.before_intake()                                       # not merged yet: stays in review
    assert parse_roadmap(path.read_text(encoding="utf-8")).item("1").status.value == "in_review"
    telemetry.record_outcome({"branch": f"conveyor/{ONE}", "task_id": ONE, "pr_url": url}, "merged", time.time())
    upkeep.check_merges()                                        # what the periodic merge-check job runs
    upkeep.before_intake()
    completed = with_status(ROADMAP, "1", "✅ Completed")
    assert path.read_text(encoding="utf-8") == with_status(completed, "2", f"🔄 In Progress (task {TWO})")
    assert (repo.inbox / f"{TWO}.yaml").is_file()              # item 2's dependency is met: it starts


# ---------------------------------------------------------------------------- edits racing the write
def save(path: Path, text: str, *, in_place: bool) -> None:
    """Save like an editor: in place (same inode) or a new file renamed over the old one."""
    if in_place:
        with open(path, "r+", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.write(text)
        return
    staging = path.with_name(".edit.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def racing_edit(path: Path, text: str, *, in_place: bool, modes: list[int] | None = None) -> Callable[[], None]:
    """A `before_swap` hook that saves `text` once, in the window between the daemon's read and its write."""
    calls: list[int] = []

    def hook() -> None:
        if not calls:
            save(path, text, in_place=in_place)
            if modes is not None:
                modes.append(path.stat().st_mode & 0o7777)
        calls.append(1)
    return hook


@pytest.mark.parametrize("swap", [True, False], ids=["exchange", "compare-then-replace"])
@pytest.mark.parametrize("in_place", [False, True], ids=["rename-save", "in-place-save"])
def test_an_edit_saved_during_the_write_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: bool,
                                                in_place: bool) -> None:
    if not swap:
        monkeypatch.setattr(roadmap_file, "exchange", lambda _a, _b: False)   # a platform without the swap
    path = tmp_path / "ROADMAP.md"
    path.write_text(ROADMAP, encoding="utf-8")
    path.chmod(0o640)
    users = ROADMAP.replace("Do the first thing.", "Do the first thing, carefully.") + "\n### Notes\nmine\n"
    modes: list[int] = []
    written = roadmap_file.update_status(path, lambda r: r.get("1"), f"🔄 In Progress (task {ONE})",
                                         before_swap=racing_edit(path, users, in_place=in_place, modes=modes))
    assert written.outcome is roadmap_file.WriteOutcome.WRITTEN
    assert path.read_text(encoding="utf-8") == set_status(users, "1", f"🔄 In Progress (task {ONE})")
    assert path.stat().st_mode & 0o7777 == modes[0]          # the mode the author's save left is kept
    assert [p.name for p in tmp_path.iterdir()] == ["ROADMAP.md"]       # no temporary file left behind


def test_the_authors_own_status_change_wins_over_the_daemons(tmp_path: Path) -> None:
    path = tmp_path / "ROADMAP.md"
    path.write_text(ROADMAP, encoding="utf-8")
    users = set_status(ROADMAP, "1", "✅ Completed")
    written = roadmap_file.update_status(path, lambda r: r.get("1"), f"🔄 In Progress (task {ONE})",
                                         before_swap=racing_edit(path, users, in_place=False))
    assert written.outcome is roadmap_file.WriteOutcome.CONFLICT
    assert path.read_text(encoding="utf-8") == users


def test_status_writes_under_a_stream_of_saves_lose_none(tmp_path: Path) -> None:
    """An editor saves its buffer (a new note each time) every millisecond while the daemon flips a status
    line: whatever the author saved last is on disk at the end, the daemon's status merged into it."""
    path = tmp_path / "ROADMAP.md"
    path.write_text(ROADMAP, encoding="utf-8")
    stop = threading.Event()
    notes: list[int] = []

    def author() -> None:
        buffer = ROADMAP
        while not stop.is_set() or len(notes) < 20:
            buffer += f"\nnote {len(notes)}\n"
            save(path, buffer, in_place=len(notes) % 2 == 1)
            notes.append(len(notes))
            time.sleep(0.001)

    thread = threading.Thread(target=author)
    thread.start()
    try:
        for round_ in range(40):
            status = f"🔄 In Progress (task {ONE})" if round_ % 2 else f"👀 In Review (branch conveyor/{ONE})"
            roadmap_file.update_status(path, lambda r: r.get("1"), status)
    finally:
        stop.set()
        thread.join()
    written = roadmap_file.update_status(path, lambda r: r.get("1"), f"🔄 In Progress (task {ONE})")
    assert written.outcome in (roadmap_file.WriteOutcome.WRITTEN, roadmap_file.WriteOutcome.UNCHANGED)
    text = path.read_text(encoding="utf-8")
    assert all(f"\nnote {n}\n" in text for n in notes)
    assert parse_roadmap(text).item("1").status_text == f"🔄 In Progress (task {ONE})"
    assert [p.name for p in tmp_path.iterdir()] == ["ROADMAP.md"]
